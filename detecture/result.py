"""What a segmentation returns: descriptions plus logits kept at model resolution, upsampled on demand.

Region logits are stored *relative to the dustbin* (region minus dustbin logit), so a partition computed with a
static dustbin at 0 (the benchmark's single scoring path) is exactly the pipeline's own softmax-with-dustbin
partition. Full-resolution maps are produced in row chunks, which bounds memory for very large images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .utils.image_ops import partition

ROW_CHUNK = 512


def upsample_rows(lowres: torch.Tensor, size: tuple[int, int], rows: slice) -> torch.Tensor:
    """Rows ``rows`` of a bilinear ``F.interpolate(..., align_corners=False)`` to ``size``, computed on their own."""
    channels, h, w = lowres.shape
    out_h, out_w = size
    if (h, w) == (out_h, out_w):  # already at full resolution (e.g. the classical segmenter): nothing to resample
        return lowres[:, rows].float()
    y = (torch.arange(rows.start, rows.stop, dtype=torch.float32) + 0.5) * (h / out_h) - 0.5
    x = (torch.arange(out_w, dtype=torch.float32) + 0.5) * (w / out_w) - 0.5
    y, x = y.clamp(0, h - 1), x.clamp(0, w - 1)
    grid_y = (2 * y + 1) / h - 1  # grid_sample's align_corners=False normalisation
    grid_x = (2 * x + 1) / w - 1
    grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1)[None]
    return F.grid_sample(lowres[None].float(), grid, mode="bilinear", align_corners=False, padding_mode="border")[0]


@dataclass
class SegmentationResult:
    """One image's regions. ``region_logits`` is (K, h, w) at model resolution, relative to the dustbin."""

    descriptions: list[str]
    response: str
    region_logits: torch.Tensor
    image_size: tuple[int, int]
    meta: dict = field(default_factory=dict)

    @property
    def num_regions(self) -> int:
        return len(self.descriptions)

    @property
    def logits(self) -> torch.Tensor:
        """(K, H, W) float32 region logits at input resolution (dustbin = 0)."""
        h, w = self.image_size
        if self.num_regions == 0:
            return torch.zeros(0, h, w)
        return torch.cat([upsample_rows(self.region_logits, (h, w), slice(r, min(r + ROW_CHUNK, h)))
                          for r in range(0, h, ROW_CHUNK)], dim=1)

    @property
    def label_map(self) -> np.ndarray:
        """(H, W) uint8: 0 where the dustbin wins (no region), k for region k (1-based)."""
        h, w = self.image_size
        labels = np.zeros((h, w), dtype=np.uint8)
        if self.num_regions == 0:
            return labels
        for r in range(0, h, ROW_CHUNK):
            rows = slice(r, min(r + ROW_CHUNK, h))
            labels[rows] = partition(upsample_rows(self.region_logits, (h, w), rows).numpy())
        return labels

    @property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool, one disjoint mask per region."""
        labels = self.label_map
        return labels[None] == np.arange(1, self.num_regions + 1, dtype=np.uint8)[:, None, None]

    def region_scores(self) -> list[float]:
        """Per region, the mean softmax probability (over dustbin + K channels) of that region on its own pixels.

        A confidence in [0, 1] that means the same for every method: how clearly each pixel the region won was won.
        """
        h, w = self.image_size
        sums = np.zeros(self.num_regions + 1)
        counts = np.zeros(self.num_regions + 1)
        for r in range(0, h, ROW_CHUNK):
            up = upsample_rows(self.region_logits, (h, w), slice(r, min(r + ROW_CHUNK, h)))
            probs = torch.softmax(torch.cat([torch.zeros_like(up[:1]), up]), dim=0).numpy()
            labels = partition(up.numpy()).ravel()
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
