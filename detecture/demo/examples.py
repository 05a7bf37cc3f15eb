"""Example images for the demo, built at start from real CC0 texture photos in ``skimage.data`` (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 512


def _textures() -> dict[str, np.ndarray]:
    from skimage import data

    return {name: getattr(data, name)() for name in ("brick", "grass", "gravel")}


def mosaic_three(side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Brick / grass / gravel with curved boundaries: an RGB image and its (H, W) ground-truth labels 1..3."""
    tex = _textures()
    y, x = np.mgrid[0:side, 0:side] / side
    labels = np.where(y < 0.45 + 0.12 * np.sin(2 * np.pi * x), 1, 2).astype(np.uint8)
    labels[(x - 0.7) ** 2 + (y - 0.7) ** 2 < 0.22 ** 2] = 3
    gray = np.choose(labels - 1, [tex["brick"][:side, :side], tex["grass"][:side, :side], tex["gravel"][:side, :side]])
    return np.repeat(gray[:, :, None], 3, axis=2).astype(np.uint8), labels


def mosaic_two(side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Grass with a disc of brick in the middle (labels 1 = grass, 2 = brick)."""
    tex = _textures()
    y, x = np.mgrid[0:side, 0:side] / side
    labels = np.where((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.3 ** 2, 2, 1).astype(np.uint8)
    gray = np.where(labels == 1, tex["grass"][:side, :side], tex["brick"][:side, :side])
    return np.repeat(gray[:, :, None], 3, axis=2).astype(np.uint8), labels


def write_examples(folder: Path) -> list[Path]:
    """Write the example mosaics as PNGs into ``folder`` and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in (("brick-grass-gravel.png", mosaic_three), ("brick-disc-on-grass.png", mosaic_two)):
        path = folder / name
        if not path.exists():
            Image.fromarray(build()[0]).save(path)
        paths.append(path)
    return paths
