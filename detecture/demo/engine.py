"""What the demo does per request, without Gradio: load the upload, segment it, and build what the page shows.

Models are loaded once (in :func:`DemoEngine.create`); calls to the VLM pipeline hold a lock, so GPU work runs one
request at a time even if the web server runs handlers concurrently. Downloads are written into a per-request
folder under one temporary root; only the most recent :data:`KEEP_REQUESTS` folders are kept.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import DetectureError, InputError
from ..utils import atomic
from ..utils.image_ops import MAX_REGIONS, fit_to_side
from ..visualize import region_color
from .uploads import ANALYSIS_SIDE, load_upload

if TYPE_CHECKING:
    from ..service import SegmentRequest

logger = logging.getLogger(__name__)

CLASSICAL = "classical"
TEXT = "detecture (text grounding)"
BRIDGE = "detecture (bridge grounding)"
K_CHOICES = ("auto", "1", "2", "3", "4", "5", "6")
KEEP_REQUESTS = 50
TABLE_HEADERS = ["region", "description", "area %", "score"]
DISPLAY_SIDE = 640  # the page shows ~700 px; drawing 1-MP masks there cost the web server ~0.5 s per request
MASK_OPACITY = 0.55  # the annotated view draws a mask with alpha = its value: keep the texture visible beneath


# Where the refusal of an image the detecture methods cannot read points the user: the page has a method choice,
# not segment's --method.
PAGE_ALTERNATIVE = "choose the classical method"
# What the demo does, and its options can do, when the models do not load (segment's hint, --method classical, is
# no option of the demo's).
OFFLINE_DEMO = ("serving the classical method only (CPU, no weights); give --qwen / --sam3 local model folders to "
                "load the models, or start 'detecture demo' without --vlm and --head to serve classical without "
                "trying")


@dataclass
class DemoResponse:
    """Everything one request shows: the annotated image (display size), the region table (areas measured at analysis
    size), download files and a status line. ``colours`` maps each annotation's label to its region's colour
    (``#rrggbb``), the one the label PNG and the CLI's overlay give it: without it the page colours regions by
    their order among the annotations."""

    image: np.ndarray
    annotations: list[tuple[np.ndarray, str]]
    table: list[list[Any]]
    files: list[str]
    status: str
    colours: dict[str, str]


@dataclass
class DemoEngine:
    """The segmenters the demo offers, loaded once."""

    pipeline: Any = None
    note: str = ""
    max_side: int = ANALYSIS_SIDE
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="detecture-demo-")))
    _gpu_lock: threading.Lock = field(default_factory=threading.Lock)
    _remove_workdir: weakref.finalize = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # An engine that is dropped without close(), or still alive when the interpreter exits, removes its folder
        # too: a library user's script or a test must not leave a folder in the temporary directory per engine.
        self._remove_workdir = weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)

    @classmethod
    def create(cls, tiny: bool = False, load_models: bool = False, **load_kwargs: Any) -> "DemoEngine":
        """Load the VLM pipeline if asked; if it cannot load, the demo still serves ``classical`` and says why."""
        if not (tiny or load_models):
            return cls()
        from ..service import SegmentRequest, load_pipeline

        try:
            pipeline = load_pipeline(SegmentRequest("detecture", tiny=tiny, **load_kwargs), offline_hint=None)
        except DetectureError as exc:
            logger.warning("detecture models unavailable (%s); %s", exc, OFFLINE_DEMO)
            return cls(note=f"Detecture models could not be loaded ({exc}); the classical method works offline.")
        note = "Tiny random backbones: detecture outputs are meaningless (plumbing only)." if tiny else ""
        return cls(pipeline=pipeline, note=note)

    def close(self) -> None:
        """Remove the examples and downloads written under :attr:`workdir`."""
        self._remove_workdir()

    @property
    def methods(self) -> list[str]:
        if self.pipeline is None:
            return [CLASSICAL]
        return [CLASSICAL, TEXT] + ([BRIDGE] if self.pipeline.head is not None else [])

    def run(self, path: str | Path | None, method: str, k: str = "auto", query: str = "",
            name: str | None = None) -> DemoResponse:
        """Segment the uploaded file at ``path``; user mistakes raise :class:`InputError` with a readable message."""
        from .. import service

        if path is None:
            raise InputError("upload an image or pick an example first")
        if method not in self.methods:
            raise InputError(f"method {method!r} is not available here (available: {', '.join(self.methods)})")
        request = self.request(method, k, query)
        name = name or Path(path).name
        check_shape = partial(service.check_image, request=request, alternative=PAGE_ALTERNATIVE)
        image, original, frame = load_upload(path, name, self.max_side, check_shape)
        start = time.perf_counter()
        if method == CLASSICAL:
            result = service.segment([image], request)[0]
        else:
            import torch

            try:
                with self._gpu_lock:
                    result = service.segment([image], request, self.pipeline, [name])[0]
            except torch.OutOfMemoryError:
                raise InputError(f"{name}: out of GPU memory for this image; try a smaller image or the classical "
                                 "method") from None
        elapsed = time.perf_counter() - start
        labels = result.label_map
        return self._response(Path(name), image, original, frame, result, request.regime, labels, method, elapsed)

    @staticmethod
    def request(method: str, k: str = "auto", query: str = "") -> "SegmentRequest":
        """The service request a page choice makes: a method label names the method and its grounding; an empty
        query box means no query, and a filled one replaces K (as the page's label says), whatever K shows."""
        from ..service import SegmentRequest

        query = (query or "").strip() or None
        if query is not None:
            k = None
        if method == CLASSICAL:
            return SegmentRequest("classical", k=k, query=query)
        return SegmentRequest("detecture", k=k, query=query, grounding="bridge" if method == BRIDGE else "text")

    def _response(self, name: Path, image: np.ndarray, original: tuple[int, int], frame: dict, result, regime,
                  labels: np.ndarray, method: str, elapsed: float) -> DemoResponse:
        from ..output import result_record

        # the CLI's record, with the upload's stored frame; its size and masks are at the analysis size
        record = result_record(name, result, regime, labels, note=self.note or None, frame=frame)
        record["original_size"] = list(original)
        scores = result.region_scores()
        shown_image, shown_labels = fit_to_side(image, labels, DISPLAY_SIDE)
        table, annotations, colours = [], [], {}
        for region, score in zip(record["regions"], scores):
            k, share = region["index"], region["area_fraction"]
            table.append([k, region["description"], round(100 * share, 1), round(score, 3)])
            label = f"{k}. {region['description']}"
            annotations.append(((shown_labels == k) * MASK_OPACITY, label))
            colours[label] = "#{:02x}{:02x}{:02x}".format(*region_color(k))
        folder = self._request_folder()
        # the upload's name without its last suffix, dots kept ("photo.v2.png" -> "photo.v2.json"), as the CLI does
        json_path, labels_path = folder / f"{name.stem}.json", folder / f"{name.stem}_labels.png"
        atomic.write_json(json_path, record)
        label_png = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
        # index k = region k, in region_color(k): the colour the page and the CLI's overlay give it, for any k
        label_png.putpalette([0, 0, 0] + [int(c) for k in range(1, MAX_REGIONS + 1) for c in region_color(k)])
        with atomic.atomic_path(labels_path) as tmp:
            label_png.save(tmp, format="PNG")
        h, w = labels.shape
        scaled = f" (analysed at {w}x{h})" if (h, w) != original else ""
        status = (f"{result.num_regions} region{'s' if result.num_regions != 1 else ''} found by {method} in "
                  f"{elapsed:.2f} s; image {original[1]}x{original[0]}{scaled}.")
        if self.note:
            status += f" {self.note}"
        return DemoResponse(shown_image, annotations, table, [str(json_path), str(labels_path)], status, colours)

    def _request_folder(self) -> Path:
        root = self.workdir / "requests"
        root.mkdir(parents=True, exist_ok=True)
        old = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
        for stale in old[:max(0, len(old) - KEEP_REQUESTS + 1)]:
            shutil.rmtree(stale, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=root))
