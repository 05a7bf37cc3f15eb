"""The notebook-sized entry point: ``detecture.segment(image)`` with either method, one call, any image form.

``classical`` runs the weightless CPU segmenter (:mod:`detecture.classical`) and wraps its margin logits in the same
:class:`~detecture.result.SegmentationResult` the VLM pipeline returns, so everything downstream (overlays, JSON,
``to_hf()``, RLE) is shared. ``detecture`` loads Qwen3-VL + SAM3 once per set of loading options and keeps them for
later calls, since reloading an 8B model per image would dominate a notebook session.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError
from .prompts import Regime, format_response
from .result import SegmentationResult

METHODS = ("classical", "detecture")
CLASSICAL_SEED = 0

_PIPELINES: dict[tuple, Any] = {}


def regime_for(k: int | str | None = None, query: str | None = None) -> Regime:
    """The regime a (k, query) pair asks for: a query, exactly k regions, or "1 to 6" when k is None / 'auto'."""
    if query is not None:
        if k not in (None, "auto"):
            raise InputError("give either k or query, not both")
        return Regime.query(query)
    if k is None:
        return Regime.autonomous()
    return Regime.parse(str(k))


def as_image_array(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a path, a PIL image or an array (the forms notebooks hold images in)."""
    from .images import as_rgb_array, load_image

    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    return as_rgb_array(image)


def segment_classical(image: np.ndarray, regime: Regime, seed: int = CLASSICAL_SEED) -> SegmentationResult:
    """Classical segmentation of an (H, W, 3) uint8 array as a :class:`SegmentationResult` with measured descriptions.

    The margin logits are kept at the resolution the segmenter returns; the result's static dustbin at 0 partitions
    them exactly as the benchmark scores them.
    """
    import torch

    from .benchmark.metrics import partition
    from .classical import segment_texture
    from .classical.describe import describe_regions
    from .utils.parallel import one_thread

    if regime.kind == "query":
        raise InputError("a query needs --method detecture: the classical segmenter finds regions, it cannot read "
                         "a phrase")
    k = regime.count if regime.kind == "oracle" else None
    with one_thread():  # the same partition in a notebook, the demo and `segment --workers N`
        logits = np.ascontiguousarray(segment_texture(image, k, seed=seed), dtype=np.float32)
    descriptions = list(describe_regions(image, partition(logits)))
    # A channel that wins no pixel gets no description from the describer; it stays, so K matches what was asked.
    descriptions += [f"Empty region {i}" for i in range(len(descriptions) + 1, logits.shape[0] + 1)]
    return SegmentationResult(descriptions=descriptions, response=format_response(descriptions),
                              region_logits=torch.from_numpy(logits),
                              image_size=(int(image.shape[0]), int(image.shape[1])),
                              meta={"method": "classical", "grounding": None})


def load_pipeline(tiny: bool = False, **load_kwargs: Any):
    """A :class:`~detecture.pipeline.DetecturePipeline`, loaded once per distinct set of options."""
    from .pipeline import DetecturePipeline

    key = (tiny, tuple(sorted((name, str(value)) for name, value in load_kwargs.items())))
    if key not in _PIPELINES:
        _PIPELINES[key] = DetecturePipeline.tiny(**load_kwargs) if tiny else DetecturePipeline.from_pretrained(
            **load_kwargs)
    return _PIPELINES[key]


def segment(
    image: str | os.PathLike | Image.Image | np.ndarray,
    method: str = "classical",
    k: int | str | None = None,
    query: str | None = None,
    *,
    grounding: str | None = None,
    pipeline: Any = None,
    tiny: bool = False,
    seed: int = CLASSICAL_SEED,
    **load_kwargs: Any,
) -> SegmentationResult:
    """Segment one image into texture regions.

    Args:
        image: a file path, a PIL image or an (H, W[, 3]) array.
        method: ``"classical"`` (CPU, no weights) or ``"detecture"`` (Qwen3-VL + SAM3).
        k: exactly this many regions (1..6), or ``None`` / ``"auto"`` to let the method choose.
        query: the one region matching this phrase (``detecture`` only).
        grounding: ``"bridge"`` or ``"text"`` for ``detecture``; default bridge when a head is loaded, else text.
        pipeline: an already loaded ``DetecturePipeline`` to use instead of loading one.
        tiny: tiny random backbones (offline plumbing; meaningless output).
        seed: the classical segmenter's k-means seed.
        **load_kwargs: passed to ``DetecturePipeline.from_pretrained`` (``qwen``, ``sam3``, ``head``, ``device``...).
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    regime = regime_for(k, query)
    array = as_image_array(image)
    if method == "classical":
        if pipeline is not None or tiny or load_kwargs:
            raise InputError("model options (pipeline, tiny, qwen, sam3, head, ...) apply to method='detecture' only")
        return segment_classical(array, regime, seed=seed)
    pipe = pipeline if pipeline is not None else load_pipeline(tiny=tiny, **load_kwargs)
    if grounding is None:
        grounding = "bridge" if pipe.head is not None else "text"
    forced = None
    if pipe.tiny:
        from .commands.segment_output import forced_tiny_responses

        forced = forced_tiny_responses(regime, 1)
    return pipe.segment([array], regime, grounding, forced)[0]
