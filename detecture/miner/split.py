"""Deterministic train/val split by scene.

Each scene's split is a pure function of ``(seed, scene id)`` (a SHA-256 hash mapped to [0, 1)), so it does not
depend on which other scenes exist, on processing order or on resuming, and all degrees of a scene share it:
no scene can leak from train into val.
"""

from __future__ import annotations

import hashlib

TRAIN, VAL = "train", "val"


def scene_split(scene_id: str, seed: int, val_fraction: float) -> str:
    """``"val"`` for about ``val_fraction`` of scene ids, ``"train"`` for the rest; stable for a given seed."""
    digest = hashlib.sha256(f"{seed}:{scene_id}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return VAL if u < val_fraction else TRAIN
