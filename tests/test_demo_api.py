"""The demo without a browser: its API endpoint through ``gradio_client``, and the bounded-memory upload reader."""

from __future__ import annotations

import errno
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo_fixture import corrupt_png, demo_server, free_port  # noqa: F401  (fixtures)
from detecture.errors import InputError


@pytest.fixture(scope="module")
def client(demo_server, tmp_path_factory):  # noqa: F811
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(demo_server[1], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def test_api_segments_a_mosaic_and_outputs_agree(client, tmp_path):
    from gradio_client import handle_file

    from detecture.demo.examples import mosaic_two
    from detecture.utils import rle

    path = tmp_path / "disc.png"
    Image.fromarray(mosaic_two(256)[0]).save(path)
    regions, table, files, status = client.predict(handle_file(str(path)), "classical", "2", "",
                                                   api_name="/segment")
    assert len(regions["annotations"]) == 2 and status.startswith("2 regions found by classical")
    assert [row[0] for row in table["data"]] == [1, 2]
    record_path = next(f for f in files if f.endswith(".json"))
    labels_path = next(f for f in files if f.endswith("_labels.png"))
    record = json.loads(open(record_path).read())
    with Image.open(labels_path) as im:
        assert im.mode == "P"
        labels = np.asarray(im)
    assert labels.shape == (256, 256) and record["size"] == [256, 256] and record["method"] == "classical"
    for region, row in zip(record["regions"], table["data"]):
        mask = rle.decode(region["rle"])
        assert np.array_equal(mask, labels == region["index"])  # JSON masks and the PNG label map agree
        assert row[2] == pytest.approx(100 * mask.mean(), abs=0.05)  # the table's area % is the mask's share


def test_api_record_carries_the_uploads_stored_frame(client, tmp_path):
    """A phone photo stored sideways with an EXIF orientation reaches the app as uploaded (``gr.File`` hands over the
    file's path; only ``gr.Image`` would rotate it), and its downloaded record says what the CLI's says for the file:
    the orientation applied and the size as stored, with which the upright masks map back onto the stored pixels."""
    from gradio_client import handle_file
    from skimage import data

    from detecture.images import load_image_and_frame, to_stored_frame

    stored_labels = np.ones((160, 240), dtype=np.uint8)
    stored_labels[:, 80:] = 2  # brick on the left third, grass beside it: a half turn would move the boundary
    grey = np.where(stored_labels == 1, data.brick()[:160, :240], data.grass()[:160, :240]).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: upright it is 160 wide and 240 high
    path = tmp_path / "sideways.jpg"
    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2)).save(path, exif=exif, quality=95)
    _, _, files, _ = client.predict(handle_file(str(path)), "classical", "2", "", api_name="/segment")
    record = json.loads(open(next(f for f in files if f.endswith(".json"))).read())
    with Image.open(next(f for f in files if f.endswith("_labels.png"))) as im:
        labels = np.asarray(im)
    assert record["exif_orientation"] == 6 and record["stored_size"] == [160, 240]
    assert {key: record[key] for key in ("exif_orientation", "stored_size")} == load_image_and_frame(path)[1]
    assert record["size"] == record["original_size"] == [240, 160] and labels.shape == (240, 160)
    back = to_stored_frame(labels, record["exif_orientation"])
    agreement = max(np.mean(back == stored_labels), np.mean(back == 3 - stored_labels))
    assert back.shape == (160, 240) and agreement > 0.9


def test_api_error_is_readable_and_server_keeps_serving(client, corrupt_png, tmp_path):  # noqa: F811
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="corrupt.png: not a readable image"):
        client.predict(handle_file(str(corrupt_png)), "classical", "auto", "", api_name="/segment")
    with pytest.raises(AppError, match="query needs the detecture method"):
        client.predict(handle_file(str(corrupt_png)), "classical", "auto", "rough bark", api_name="/segment")
    good = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(good)
    regions, table, files, status = client.predict(handle_file(str(good)), "classical", "auto", "",
                                                   api_name="/segment")
    assert len(table["data"]) == 1  # a textureless image is one region


def test_values_gradio_refuses_are_the_clients_error_and_no_server_traceback(client, tmp_path, capfd):
    """A file that is not an image and a K the page does not offer, sent through the API, are refused by Gradio
    with its message to the client; the server's console stays free of tracebacks for a client's mistake."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    image = tmp_path / "flat.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(image)
    capfd.readouterr()
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(handle_file(str(notes)), "classical", "auto", "", api_name="/segment")
    with pytest.raises(AppError, match="Value: 9 is not in the list of choices"):
        client.predict(handle_file(str(image)), "classical", "9", "", api_name="/segment")
    assert "Traceback" not in capfd.readouterr().err


def test_huge_upload_is_refused_before_decoding(tmp_path):
    from detecture.demo.uploads import MAX_UPLOAD_PIXELS, load_upload

    side = int(MAX_UPLOAD_PIXELS ** 0.5) + 100
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # tiny file, > 100 MP once decoded
    with pytest.raises(InputError, match="bomb.png: .* MP; the demo accepts up to"):
        load_upload(path)


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_a_header_over_pillows_bomb_guard_gets_the_pixel_limit_message(tmp_path):
    from detecture.demo.uploads import load_upload

    path = tmp_path / "claims.png"
    png_header_only(path, 50_000, 50_000)
    with pytest.raises(InputError, match=r"^claims.png: its header claims 2500 MP; the demo accepts up to 100 MP$"):
        load_upload(path)


def test_a_thin_upload_keeps_two_pixels_across_when_shrunk(tmp_path):
    from detecture.demo.uploads import load_upload

    path = tmp_path / "thin.png"
    Image.new("RGB", (2, 3000), (40, 50, 60)).save(path)
    image, original, _ = load_upload(path, max_side=1024)
    assert original == (3000, 2) and image.shape == (1024, 2, 3)


def test_a_system_error_reading_an_upload_is_not_called_corrupt(tmp_path, monkeypatch):
    from detecture.demo.uploads import load_upload

    def failing_disk(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Image, "open", failing_disk)
    with pytest.raises(OSError) as raised:
        load_upload(tmp_path / "any.png")
    assert raised.type is OSError and raised.value.errno == errno.EIO


def test_40_megapixel_upload_is_analysed_downscaled(tmp_path):
    from detecture.demo.uploads import load_upload

    path = tmp_path / "big.jpg"
    Image.new("L", (7300, 5480), 128).save(path, quality=50)
    image, original, _ = load_upload(path, max_side=1024)
    assert original == (5480, 7300)
    assert max(image.shape[:2]) == 1024 and image.shape[2] == 3
    assert image.shape[0] == pytest.approx(1024 * 5480 / 7300, abs=1)


def test_exif_rotation_reports_the_upright_size(tmp_path):
    from detecture.demo.uploads import load_upload

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path, exif=exif)
    image, original, _ = load_upload(path)
    assert original == (300, 200) and image.shape[:2] == (300, 200)


def test_engine_refuses_a_method_that_is_not_loaded(tmp_path):
    from detecture.demo.engine import TEXT, DemoEngine

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    with pytest.raises(InputError, match="not available"):
        DemoEngine().run(path, TEXT)


def test_an_engine_removes_its_folder_when_closed_or_dropped(tmp_path):
    import gc

    from detecture.demo.engine import CLASSICAL, DemoEngine

    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    engine = DemoEngine()
    downloads = engine.run(path, CLASSICAL, k="2").files
    folder = engine.workdir
    assert all(Path(f).is_relative_to(folder) and Path(f).exists() for f in downloads)
    engine.close()
    assert not folder.exists()
    engine.close()  # a second close is harmless

    dropped = DemoEngine()
    folder = dropped.workdir
    dropped.run(path, CLASSICAL, k="2")
    del dropped
    gc.collect()
    assert not folder.exists()


def test_serving_leaves_nothing_in_the_temporary_folder(monkeypatch, tmp_path):
    """Gradio's server makes ``gradio/vibe_edit_history`` in the temporary folder it chose at import, whatever
    GRADIO_TEMP_DIR says by the time the app starts; the demo removes it again."""
    import tempfile

    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")
    from detecture.demo import app as demo_app
    from detecture.demo.engine import DemoEngine

    if demo_app.USER_CACHE is not None:
        pytest.skip("GRADIO_TEMP_DIR was set before the demo was imported: that folder is the user's")
    gradio_dir = Path(tempfile.gettempdir()) / "gradio"
    for folder in (gradio_dir / "vibe_edit_history", gradio_dir):  # an empty one left by an older run
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if gradio_dir.exists():
        pytest.skip(f"{gradio_dir} holds files of another Gradio app")
    # The app points GRADIO_TEMP_DIR at its engine's folder; monkeypatch puts back the value the module's shared
    # server keeps its own cache under (or its absence).
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    engine = DemoEngine()
    try:
        demo_app.launch(engine, port=free_port(), block=False, warm_up=False).close()
    finally:
        engine.close()
    assert not gradio_dir.exists()


def test_engine_runs_the_vlm_methods_with_tiny_backbones(tiny_pipeline, tmp_path):
    from detecture.demo.engine import BRIDGE, TEXT, DemoEngine
    from detecture.demo.examples import mosaic_two

    path = tmp_path / "disc.png"
    Image.fromarray(mosaic_two(96)[0]).save(path)
    engine = DemoEngine(pipeline=tiny_pipeline, note="tiny")
    assert engine.methods[1:] == [TEXT, BRIDGE]
    response = engine.run(path, BRIDGE, k="2")
    assert len(response.table) == 2 and response.image.shape == (96, 96, 3)
    response = engine.run(path, TEXT, k="3", query="the rough bark")  # the query box replaces K, as labelled
    assert len(response.table) == 1 and "tiny" in response.status
    record = json.loads(open(response.files[0]).read())
    assert record["regime"]["query"] == "the rough bark"
    # the CLI's method and grounding fields, not the page's label for the pair
    assert (record["method"], record["grounding"]) == ("detecture", "text")


@pytest.mark.parametrize("method", ["text", "bridge"])
def test_engine_shows_a_reply_without_regions(tiny_pipeline, tmp_path, monkeypatch, method):
    """A model that writes no ``<|seg|>`` line is a normal outcome: the page shows no regions, not an error."""
    from detecture import service
    from detecture.demo.engine import BRIDGE, TEXT, DemoEngine

    monkeypatch.setattr(service, "forced_tiny_responses", lambda regime, count: ["I see no texture here."] * count)
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(path)
    engine = DemoEngine(pipeline=tiny_pipeline)
    try:
        response = engine.run(path, TEXT if method == "text" else BRIDGE)
    finally:
        engine.close()
    assert response.table == [] and response.annotations == [] and response.status.startswith("0 regions")


def test_a_full_disk_on_the_server_is_one_readable_error(client, demo_server, tmp_path, monkeypatch):  # noqa: F811
    import errno
    import os

    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    good = tmp_path / "flat.png"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(good)
    requests = demo_server[0].workdir / "requests"
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(requests):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(AppError, match=r"or write the results \(No space left on device\)"):
        client.predict(handle_file(str(good)), "classical", "auto", "", api_name="/segment")
    assert not [p for p in requests.rglob("*") if p.name.startswith(".")]  # no half-written download left


@pytest.fixture()
def quick_cleanup_url(monkeypatch, tmp_path):
    """URL of a demo whose Gradio cache clean-up runs every second on files over a second old (the served demo:
    every minute, over 10 minutes)."""
    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")
    from detecture.demo import app as demo_app
    from detecture.demo.engine import DemoEngine

    monkeypatch.setattr(demo_app, "DELETE_CACHE", (1, 1))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # put back after the app points it at its engine's folder
    engine = DemoEngine()
    app = demo_app.launch(engine, port=free_port(), block=False, warm_up=False)
    try:
        yield app.local_url
    finally:
        app.close()
        engine.close()


def segment_stored(url: str, stored: dict) -> str:
    """The reply (server-sent events) of ``/segment`` on a file already in the server's cache, as the page sends
    it when an example was clicked or the shown upload is segmented again (``gradio_client`` would upload anew)."""
    import httpx

    call = httpx.post(f"{url}gradio_api/call/segment", json={"data": [stored, "classical", "auto", ""]})
    return httpx.get(f"{url}gradio_api/call/segment/{call.json()['event_id']}", timeout=60).text


def test_examples_outlive_the_cache_clean_up_and_an_expired_upload_says_upload_again(quick_cleanup_url):
    import time

    import httpx
    from gradio_client import Client

    client = Client(quick_cleanup_url, verbose=False, download_files=False)
    example = client.predict(0, api_name="/load_example")["value"]  # what a click on the first example loads
    image = httpx.get(example["url"]).content
    stored = httpx.post(f"{quick_cleanup_url}gradio_api/upload", files=[("files", ("mine.png", image))]).json()[0]
    deadline = time.monotonic() + 30
    while Path(stored).exists() and time.monotonic() < deadline:  # the clean-up runs, as it does after 10 minutes
        time.sleep(0.2)
    assert not Path(stored).exists()
    assert segment_stored(quick_cleanup_url, example).startswith("event: complete")
    reply = segment_stored(quick_cleanup_url, {"path": stored, "orig_name": "mine.png",
                                               "meta": {"_type": "gradio.FileData"}})
    assert reply.startswith("event: error") and "mine.png: the upload expired; upload it again" in reply


def test_an_interrupt_during_the_warm_up_closes_the_server_and_removes_the_folder(monkeypatch, tmp_path):
    """Ctrl+C while the demo starts (its warm-up request runs once the server is up) stops it as while serving."""
    import socket

    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")
    from detecture.demo import app as demo_app
    from detecture.demo.engine import DemoEngine

    def interrupted(app, engine):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_app, "_warm_up", interrupted)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # put back after the app points it at its engine's folder
    engine, port = DemoEngine(), free_port()
    with pytest.raises(KeyboardInterrupt):
        demo_app.launch(engine, port=port, block=True, warm_up=True)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # the server no longer holds the port
    assert not engine.workdir.exists()


def test_the_aspect_limit_judges_the_uploaded_size_and_the_page_wording(tiny_pipeline, tmp_path):
    """A strip at the detecture methods' limit (one side 200 times the other) is accepted, though shrinking it to
    the analysis size rounds its short side down; one past the limit is refused naming the file and its size as
    uploaded, and pointing at the page's classical method, which accepts it."""
    from detecture.demo.engine import CLASSICAL, TEXT, DemoEngine

    rng = np.random.default_rng(0)
    at_limit, past_limit = tmp_path / "at-limit.png", tmp_path / "past-limit.png"
    Image.fromarray(rng.integers(0, 255, (2000, 10, 3), dtype=np.uint8)).save(at_limit)
    Image.fromarray(rng.integers(0, 255, (2010, 10, 3), dtype=np.uint8)).save(past_limit)
    engine = DemoEngine(pipeline=tiny_pipeline)
    try:
        assert len(engine.run(at_limit, TEXT, k="2").table) == 2
        with pytest.raises(InputError) as refused:
            engine.run(past_limit, TEXT, k="2")
        assert engine.run(past_limit, CLASSICAL, k="2").table
    finally:
        engine.close()
    message = str(refused.value)
    assert message.startswith("past-limit.png: image is 10x2010,") and message.endswith("choose the classical method)")
    assert "--method" not in message


@pytest.mark.parametrize("upload", ["photo.v2.png", "scan.2024.01.05.png"])
def test_both_downloads_keep_the_whole_name_of_an_upload_with_dots(upload, tmp_path):
    from detecture.demo.engine import CLASSICAL, DemoEngine

    path = tmp_path / upload
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path, format="PNG")
    engine = DemoEngine()
    try:
        names = sorted(Path(f).name for f in engine.run(path, CLASSICAL, k="2").files)
    finally:
        engine.close()
    stem = upload.removesuffix(".png")
    assert names == [f"{stem}.json", f"{stem}_labels.png"]



def test_page_regions_have_the_colours_of_the_label_png(monkeypatch, tmp_path):
    """The page draws each region in the colour the downloaded label PNG (and the CLI's overlay) gives it, not in
    colours of its own that follow the regions' order: the Segment button's handler hands the AnnotatedImage a
    colour map along with the regions."""
    gr = pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e .[demo])")
    from detecture.demo.app import build_app
    from detecture.demo.engine import CLASSICAL, DemoEngine
    from detecture.demo.examples import mosaic_three

    path = tmp_path / "three.png"
    Image.fromarray(mosaic_three(192)[0]).save(path)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # put back after the app points it at its engine's folder
    engine = DemoEngine()
    try:
        app = build_app(engine)
        run = next(block for block in app.blocks.values() if block.elem_id == "run")
        page = next(fn for fn in app.fns.values() if (run._id, "click") in fn.targets)
        regions, _, files, _ = page.fn(str(path), CLASSICAL, "3", "")
        with Image.open(next(f for f in files if f.endswith("_labels.png"))) as labels_png:
            palette = np.array(labels_png.getpalette()).reshape(-1, 3)
        colour_map = regions["color_map"]
        assert sorted(colour_map) == sorted(label for _, label in regions["value"][1]) and len(colour_map) == 3
        drawn = gr.AnnotatedImage(color_map=colour_map).postprocess(regions["value"])  # as the server draws them
        for annotation in drawn.annotations:
            k = int(annotation.label.split(".")[0])
            assert colour_map[annotation.label] == "#{:02x}{:02x}{:02x}".format(*palette[k])
            with Image.open(annotation.image.path) as mask:
                rgba = np.asarray(mask.convert("RGBA")).reshape(-1, 4)
            assert np.unique(rgba[rgba[:, 3] > 0, :3], axis=0).tolist() == [palette[k].tolist()], annotation.label
    finally:
        engine.close()


def test_models_that_do_not_load_leave_classical_with_advice_in_the_demos_options(monkeypatch, caplog):
    """The service's hint names segment's --method classical, which the demo has not: the demo names its own."""
    import logging

    from detecture.demo.engine import CLASSICAL, DemoEngine
    from detecture.errors import ModelAccessError
    from detecture.pipeline import DetecturePipeline

    def unreachable(**options):
        raise ModelAccessError("could not load Qwen3-VL model 'Qwen/x': the hub is unreachable")

    monkeypatch.setattr(DetecturePipeline, "from_pretrained", unreachable)
    with caplog.at_level(logging.WARNING, logger="detecture.demo.engine"):
        engine = DemoEngine.create(load_models=True, qwen="Qwen/x")
    try:
        assert engine.methods == [CLASSICAL] and "the hub is unreachable" in engine.note
        warning = caplog.text
        assert "--method" not in warning + engine.note and "without --vlm" in warning
        assert "the hub is unreachable" in warning and "classical" in warning
    finally:
        engine.close()
