"""The notebook-sized entry point: ``detecture.segment(image)`` with either method, one call, any image form.

It only turns its arguments into a :class:`~detecture.service.SegmentRequest`; the service decides everything else
(defaults, refusals, K semantics) and returns the same :class:`~detecture.result.SegmentationResult` the CLI and the
demo get. ``classical`` runs the weightless CPU segmenter; ``detecture`` loads Qwen3-VL + SAM3 once per set of
loading options and keeps them for later calls.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .service import CLASSICAL_SEED, SegmentRequest, segment_one

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .result import SegmentationResult


def segment(
    image: "str | os.PathLike | Image.Image | np.ndarray",
    method: str = "classical",
    k: int | str | None = None,
    query: str | None = None,
    *,
    grounding: str | None = None,
    pipeline: Any = None,
    tiny: bool = False,
    seed: int = CLASSICAL_SEED,
    **load_kwargs: Any,
) -> "SegmentationResult":
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
        **load_kwargs: ``classical_params`` (the classical segmenter's settings: a ``ClassicalParams`` or the path of
            a YAML file of its fields), or model options (``qwen``, ``sam3``, ``head``, ``device``, ``dtype``, ...),
            as on the CLI.
    """
    request = SegmentRequest.from_options(method, k=k, query=query, grounding=grounding or "auto", tiny=tiny,
                                          seed=seed, **load_kwargs)
    return segment_one(image, request, pipeline)
