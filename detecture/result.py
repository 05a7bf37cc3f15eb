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

ROW_CHUNK = 512


def upsample_rows(lowres: torch.Tensor, size: tuple[int, int], rows: slice) -> torch.Tensor:
    """Rows ``rows`` of a bilinear ``F.interpolate(..., align_corners=False)`` to ``size``, computed on their own."""
    channels, h, w = lowres.shape
    out_h, out_w = size
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
            up = upsample_rows(self.region_logits, (h, w), rows)
            best, idx = up.max(dim=0)
            labels[rows] = torch.where(best > 0, idx + 1, 0).numpy().astype(np.uint8)
        return labels

    @property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool, one disjoint mask per region."""
        labels = self.label_map
        return labels[None] == np.arange(1, self.num_regions + 1, dtype=np.uint8)[:, None, None]
