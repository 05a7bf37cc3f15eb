"""What a segmentation returns: descriptions plus logits kept at model resolution, upsampled on demand.

Region logits are stored *relative to the dustbin* (region minus dustbin logit), so a partition computed with a
static dustbin at 0 (the benchmark's single scoring path) is exactly the pipeline's own softmax-with-dustbin
partition. Full-resolution maps are produced in row chunks, which bounds memory for very large images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax

from .utils.image_ops import partition

ROW_CHUNK = 512


def _source_positions(out_size: int, in_size: int, start: int, stop: int):
    """Neighbour indices and weights of output positions ``start..stop`` along one axis of a bilinear resize with
    ``align_corners=False`` (pixel centres aligned, edges clamped), as ``torch.nn.functional.interpolate`` does."""
    src = np.clip((np.arange(start, stop, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5, 0, in_size - 1)
    low = np.floor(src).astype(np.int64)
    return low, np.minimum(low + 1, in_size - 1), (src - low).astype(np.float32)


def upsample_rows(lowres: np.ndarray, size: tuple[int, int], rows: slice) -> np.ndarray:
    """Rows ``rows`` of a (K, h, w) map bilinearly resized to ``size`` (``align_corners=False``), computed on their
    own so a full-resolution map never has to exist at once. NumPy, so the CPU-only classical path needs no torch."""
    _, h, w = lowres.shape
    out_h, out_w = size
    lowres = np.asarray(lowres, dtype=np.float32)
    if (h, w) == (out_h, out_w):  # already at full resolution (e.g. the classical segmenter): nothing to resample
        return lowres[:, rows]
    y0, y1, wy = _source_positions(out_h, h, rows.start, rows.stop)
    x0, x1, wx = _source_positions(out_w, w, 0, out_w)
    top, bottom = lowres[:, y0], lowres[:, y1]
    columns = top + (bottom - top) * wy[:, None]
    left, right = columns[..., x0], columns[..., x1]
    return left + (right - left) * wx


@dataclass
class SegmentationResult:
    """One image's regions. ``region_logits`` is (K, h, w) at model resolution, relative to the dustbin."""

    descriptions: list[str]
    response: str
    region_logits: np.ndarray
    image_size: tuple[int, int]
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.region_logits = np.asarray(self.region_logits, dtype=np.float32)

    @property
    def num_regions(self) -> int:
        return len(self.descriptions)

    @property
    def logits(self) -> np.ndarray:
        """(K, H, W) float32 region logits at input resolution (dustbin = 0)."""
        h, w = self.image_size
        if self.num_regions == 0:
            return np.zeros((0, h, w), dtype=np.float32)
        return np.concatenate([upsample_rows(self.region_logits, (h, w), slice(r, min(r + ROW_CHUNK, h)))
                               for r in range(0, h, ROW_CHUNK)], axis=1)

    @property
    def label_map(self) -> np.ndarray:
        """(H, W) uint8: 0 where the dustbin wins (no region), k for region k (1-based)."""
        h, w = self.image_size
        labels = np.zeros((h, w), dtype=np.uint8)
        if self.num_regions == 0:
            return labels
        for r in range(0, h, ROW_CHUNK):
            rows = slice(r, min(r + ROW_CHUNK, h))
            labels[rows] = partition(upsample_rows(self.region_logits, (h, w), rows))
        return labels

    @property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool, one disjoint mask per region."""
        labels = self.label_map
        return labels[None] == np.arange(1, self.num_regions + 1, dtype=np.uint8)[:, None, None]

    def region_scores(self) -> list[float]:
        """Per region, the mean softmax probability (over dustbin + K channels) of that region on its own pixels.

        A confidence in [0, 1] computed the same way for every method: how clearly each pixel the region won was won.
        It is informative only where the logits are soft (the VLM's masks); the classical segmenter's hard ±1
        partition makes it a function of K alone. A result with no regions (the model wrote no ``<|seg|>`` line) has
        no scores.
        """
        if self.num_regions == 0:  # the dustbin alone: nothing to score, and softmax over no channels is undefined
            return []
        h, w = self.image_size
        sums = np.zeros(self.num_regions + 1)
        counts = np.zeros(self.num_regions + 1)
        for r in range(0, h, ROW_CHUNK):
            up = upsample_rows(self.region_logits, (h, w), slice(r, min(r + ROW_CHUNK, h)))
            probs = softmax(np.concatenate([np.zeros_like(up[:1]), up]), axis=0)
            labels = partition(up).ravel()
            winner = np.take_along_axis(probs.reshape(len(probs), -1), labels[None].astype(np.int64), axis=0)[0]
            sums += np.bincount(labels, weights=winner, minlength=len(sums))
            counts += np.bincount(labels, minlength=len(counts))
        return [float(s / c) if c else 0.0 for s, c in zip(sums[1:], counts[1:])]

    def to_hf(self) -> list[dict]:
        """The ``transformers`` ``image-segmentation`` pipeline format, one entry per region in region order.

        ``[{"label": description, "score": float, "mask": PIL.Image}]`` with mode-"L" masks at 0/255, so code written
        for ``pipeline("image-segmentation")`` outputs takes Detecture results unchanged.
        """
        from PIL import Image

        labels = self.label_map
        return [{"label": description, "score": score,
                 "mask": Image.fromarray(np.where(labels == k, 255, 0).astype(np.uint8))}
                for k, (description, score) in enumerate(zip(self.descriptions, self.region_scores()), 1)]
