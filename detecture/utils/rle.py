"""COCO-style uncompressed run-length encoding of binary masks (column-major, runs start with zeros).

The layout is COCO's uncompressed RLE (``iscrowd`` annotations store masks this way), so users decode Detecture's
JSON masks with the tools they already have: ``pycocotools.mask.decode`` reads the compressed form, which
``pycocotools.mask.frPyObjects(rle, *rle["size"])`` makes from this one (tests/test_rle.py checks the round trip).
"""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> dict:
    """{"size": [H, W], "counts": [...]} for a 2-D boolean mask."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def decode(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")
