"""``predictions``: score label maps another tool already produced (a peer's published outputs, say).

Each sample's prediction is a PNG label map (one grey level per segment; 0 is an ordinary segment, not "unassigned",
because published label maps use every level for a region). Each distinct level becomes a one-hot channel, converted
with the mask-only rule 5·(2m − 1), so precomputed results go through the same scoring path as live methods. The file
name comes from a pattern with ``{id}`` (record id) and ``{stem}`` (image file stem), e.g. ``seg{stem}.png``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError, InputError
from ...images import open_image
from ..metrics import mask_logits
from ..regimes import SampleRegime
from .base import Method, MethodOptions, MethodOutput, check_region_count

DEFAULT_PATTERN = "{stem}.png"


def label_map_logits(labels: np.ndarray, source: str = "prediction") -> np.ndarray:
    """(H, W) integer label map → (L, H, W) logits, one channel per distinct level in increasing order; the level
    count is checked before the channels are allocated (a photo passed as a label map has up to 256 levels)."""
    levels = np.unique(labels)
    check_region_count(len(levels), source)
    return mask_logits(labels[None] == levels[:, None, None])


class PredictionsMethod(Method):
    """Precomputed label maps from ``folder``; ``stems`` maps record ids to image file stems."""

    kind = "predictions"

    def __init__(self, options: MethodOptions, name: str, folder: str | Path, pattern: str = DEFAULT_PATTERN) -> None:
        super().__init__(options, name)
        self.folder = Path(folder).expanduser()
        self.pattern = pattern
        self.stems: dict[str, str] = {}
        if not self.folder.is_dir():
            raise InputError(f"predictions {name!r}: folder {self.folder} not found")
        if "{id}" not in pattern and "{stem}" not in pattern:
            raise InputError(f"predictions {name!r}: pattern {pattern!r} must contain {{id}} or {{stem}}")

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        stem = self.stems.get(regime.sample_id, regime.sample_id)
        path = self.folder / self.pattern.format(id=regime.sample_id, stem=stem)
        try:
            with open_image(path, "prediction") as im:
                labels = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "P") else im)
        except InputError as exc:
            raise DatasetError(str(exc)) from None
        if labels.shape != image.shape[:2]:
            raise DatasetError(f"{path}: prediction is {labels.shape[1]}x{labels.shape[0]} but the image is "
                               f"{image.shape[1]}x{image.shape[0]}")
        return MethodOutput(label_map_logits(labels, f"{path}: prediction"))
