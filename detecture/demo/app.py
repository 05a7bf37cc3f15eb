"""The demo page: upload or pick an image, choose a method and K (or a query), see regions, a table and downloads."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..errors import DetectureError, InputError
from .engine import CLASSICAL, K_CHOICES, TABLE_HEADERS, DemoEngine, DemoResponse
from .examples import write_examples

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = "200mb"
# Gradio keeps a copy of every upload and output in its cache: every minute, those older than 10 minutes go (all but
# the examples' copies, which the page offers for as long as it serves: see _keep_examples).
DELETE_CACHE = (60, 600)
# A GRADIO_TEMP_DIR the user set is theirs; otherwise Gradio's cache lives in the engine's folder, removed at exit.
USER_CACHE = os.environ.get("GRADIO_TEMP_DIR")
INTRO = ("# Detecture: texture regions\n"
         "Upload an image (or pick an example), choose a method and the number of regions, and press **Segment**. "
         "`classical` runs on the CPU without any model; the detecture methods appear when the models were loaded "
         "at start (`detecture demo --vlm`).")


def build_app(engine: DemoEngine) -> gr.Blocks:
    """The Gradio Blocks app over ``engine``; the Segment button runs the request the API endpoint ``/segment`` runs."""
    examples = write_examples(engine.workdir / "examples")
    if USER_CACHE is None:
        os.environ["GRADIO_TEMP_DIR"] = str(engine.workdir / "gradio")  # read when the Blocks and server are made

    def segment(path: str | None, method: str, k: str, query: str):
        response = _respond(engine, path, method, k, query)
        return (response.image, response.annotations), _table(response), response.files, response.status

    def show(path: str | None, method: str, k: str, query: str):
        """:func:`segment` for the page: the regions' colours (the label PNG's) go with each response, as the labels
        they are keyed by carry the descriptions; without them the page colours regions by their order."""
        response = _respond(engine, path, method, k, query)
        regions = gr.update(value=(response.image, response.annotations), color_map=response.colours)
        return regions, _table(response), response.files, response.status

    with gr.Blocks(title="Detecture demo", analytics_enabled=False, delete_cache=DELETE_CACHE) as app:
        gr.Markdown(INTRO + (f"\n\n*{engine.note}*" if engine.note else ""))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                method = gr.Radio(engine.methods, value=CLASSICAL, label="Method", elem_id="method")
                k = gr.Dropdown(list(K_CHOICES), value="auto", label="Regions (K)", elem_id="k")
                query = gr.Textbox(label="Query (detecture methods; replaces K)", placeholder="the rough bark",
                                   visible=engine.pipeline is not None, elem_id="query")
                run = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Examples")
                _keep_examples(upload, examples)
            with gr.Column(scale=2):
                annotated = gr.AnnotatedImage(label="Regions", elem_id="regions")
                status = gr.Markdown(elem_id="status")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Region table", interactive=False, elem_id="table")
                files = gr.File(label="Downloads: JSON record, PNG label map", file_count="multiple",
                                elem_id="downloads")
        for component in (upload, method, k, query):
            _quiet_refusals(component)
        inputs, outputs = [upload, method, k, query], [annotated, table, files, status]
        run.click(show, inputs, outputs, api_visibility="private", concurrency_id="segment", concurrency_limit=1)
        # The API endpoint returns plain values: gradio_client would hand its users the page's property update as
        # is. Nothing on the page triggers it.
        gr.Button(visible=False).click(segment, inputs, outputs, api_name="segment", concurrency_id="segment",
                                       concurrency_limit=1)
    return app


def _respond(engine: DemoEngine, path: str | None, method: str, k: str, query: str) -> DemoResponse:
    """``engine.run`` with every failure turned into the one-line message the page and the API client show."""
    try:
        _require_stored(path)
        return engine.run(path, method, k, query)
    except DetectureError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except MemoryError:
        raise gr.Error("not enough memory for this image; try a smaller one", print_exception=False) from None
    except OSError as exc:  # the server's disk (reading the stored upload or writing results), not the image
        logger.error("request failed: %s", exc)
        raise gr.Error(f"the server could not read the upload or write the results ({exc.strerror or exc}); "
                       "try again later", print_exception=False) from None


def _table(response: DemoResponse) -> pd.DataFrame:
    return pd.DataFrame(response.table, columns=TABLE_HEADERS)


def _keep_examples(upload: gr.File, examples: list[Path]) -> None:
    """Exempt the examples' cached copies from Gradio's clean-up (``delete_cache``). ``gr.Examples`` copies each
    example into the upload component's cache when the page is built, but without marking the copy as kept, so the
    clean-up deleted it 10 minutes after start and every later click on that example found no image. The copy's
    path is a hash of the file, so copying again here names (and touches) the same file."""
    for path in examples:
        upload.keep_in_cache.add(upload.move_resource_to_block_cache(path))


def _require_stored(path: str | None) -> None:
    """Gradio's clean-up deletes an upload 10 minutes after it arrived while the page still shows it; pressing
    Segment on it again must tell the user to upload it again, not call their image missing."""
    if path is not None and not Path(path).exists():
        raise InputError(f"{Path(path).name}: the upload expired; upload it again")


def _quiet_refusals(component: gr.components.Component) -> gr.components.Component:
    """A value the component refuses before the handler runs (a file that is not an image, a K it does not offer,
    sent through the API) is the client's mistake: the client gets Gradio's message, the server's console no
    traceback. The refusal itself stays Gradio's (which also checks that an uploaded path is its own)."""
    check = component.preprocess

    def preprocess(payload):
        try:
            return check(payload)
        except gr.Error as exc:
            exc.print_exception = False
            raise

    component.preprocess = preprocess
    return component


def launch(engine: DemoEngine, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True, warm_up: bool = True) -> gr.Blocks:
    """Serve the app; ``block=False`` returns at once (tests, benchmarks) and the caller calls ``app.close()``.
    With ``block=True`` it serves until interrupted, then closes the server and removes the engine's folder (its
    downloads and Gradio's cache) and lets the ``KeyboardInterrupt`` go on, so the command exits with status 130
    (143 for SIGTERM, which the CLI raises as one).
    An interrupt or error after the server started but before serving (in the warm-up) closes both the same way,
    whatever ``block`` says.

    ``warm_up`` sends one example through the app's own endpoint before serving users: the first request otherwise
    pays several seconds of one-off imports and initialisation in the web stack and the segmenter.
    """
    stray = _absent_gradio_folders()
    app = build_app(engine)
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
        allowed_paths=[str(engine.workdir)], prevent_thread_lock=True, quiet=True)
    # From here the server runs: an interrupt during the warm-up (Ctrl+C while starting) closes it like one while
    # serving, or its thread would keep answering and write into the engine's folder after it was removed.
    handed_over = False
    try:
        for folder in stray:  # deepest first; one that holds anything is left alone
            try:
                folder.rmdir()
            except OSError:
                pass
        if warm_up:
            _warm_up(app, engine)
        if block:
            print(f"Detecture demo ready on {app.local_url}" + (f" and {app.share_url}" if app.share_url else "")
                  + " (Ctrl+C stops it)", flush=True)
            while app.is_running:  # Gradio's block_thread() would swallow the interrupt
                time.sleep(0.1)
        handed_over = not block
    finally:
        if not handed_over:
            app.close()
            engine.close()
    return app


def _absent_gradio_folders() -> list[Path]:
    """Folders Gradio makes with every app (``gr.Blocks``) in the temporary folder it chose at import, whatever
    GRADIO_TEMP_DIR says by then, that do not exist yet, deepest first: the empty ``gradio/vibe_edit_history`` of
    an editing mode this app does not use. Removed once the server is up, so a demo leaves nothing behind in the
    temporary folder."""
    if USER_CACHE is not None:
        return []
    leaf = Path(tempfile.gettempdir()) / "gradio" / "vibe_edit_history"
    return [folder for folder in (leaf, leaf.parent) if not folder.exists()]


def _warm_up(app: gr.Blocks, engine: DemoEngine) -> None:
    from gradio_client import Client, handle_file

    example = engine.workdir / "examples" / "brick-grass-gravel.png"
    try:
        # download_files=False: the warm-up needs the round trip, not copies of its outputs in the temporary folder
        client = Client(app.local_url, verbose=False, download_files=False)
        client.predict(handle_file(str(example)), CLASSICAL, "auto", "", api_name="/segment")
    except Exception as exc:  # the page still works without it; only the first request is slower
        logger.warning("demo warm-up request failed: %s", exc)

