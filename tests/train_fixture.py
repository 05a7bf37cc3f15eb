"""Real-texture mosaics from ``skimage.data`` (brick, grass, gravel) in the unified metadata layout, for training tests.

Each sample tiles 2 or 3 of the photos into regions (halves, bands, quadrants) at ``size`` px; the masks are exact.
``bad=True`` adds one sample of each kind training must skip: a missing image, a mask of the wrong size, an empty
mask, and 7 regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from detecture.data.metadata import SampleRecord, TextureEntry, save_binary_mask, save_metadata

DESCRIPTIONS = {
    "brick": "Texture of red brick wall, regular rectangular blocks with mortar lines",
    "grass": "Texture of green grass, dense fine blades with irregular strokes",
    "gravel": "Texture of grey gravel, coarse granular stones with dark gaps",
}
TINTS = {"brick": (1.0, 0.65, 0.5), "grass": (0.5, 1.0, 0.45), "gravel": (0.9, 0.9, 0.95)}


def photo(name: str, size: int, offset: int) -> np.ndarray:
    """The photo at a quarter of its resolution from ``offset``, tiled when ``size`` needs more than one copy (the
    full-size benchmarks write 1008 px mosaics; the 512 px photos cover 128 px at this stride)."""
    full = getattr(data, name)()
    reps = -(-(offset + 4 * size) // min(full.shape))
    gray = np.tile(full, (reps, reps))[offset : offset + 4 * size : 4, offset : offset + 4 * size : 4]
    gray = gray.astype(np.float32)
    return np.clip(gray[..., None] * np.array(TINTS[name], np.float32), 0, 255).astype(np.uint8)


def layouts(size: int) -> list[np.ndarray]:
    """Label maps (values 0..K-1)."""
    yy, xx = np.mgrid[:size, :size]
    return [
        (xx >= size // 2).astype(np.int64),
        (yy >= size // 2).astype(np.int64),
        np.minimum(xx * 3 // size, 2),
        (yy * 3 // size).clip(0, 2),
        ((xx + yy) >= size).astype(np.int64),
        ((xx >= size // 2).astype(np.int64) + (yy >= size // 2)).clip(0, 2),
    ]


def write_mosaics(root: Path, n: int = 6, size: int = 64, bad: bool = False) -> Path:
    root = Path(root)
    names = list(DESCRIPTIONS)
    records = []
    for i in range(n):
        label = layouts(size)[i % len(layouts(size))]
        k = int(label.max()) + 1
        order = [names[(i + j) % 3] for j in range(k)]
        image = np.zeros((size, size, 3), np.uint8)
        textures = []
        for j, name in enumerate(order):
            image[label == j] = photo(name, size, offset=8 * i)[label == j]
            mask_path = f"masks/s{i}_{j}.png"
            save_binary_mask(root / mask_path, label == j)
            textures.append(TextureEntry(DESCRIPTIONS[name], mask_path))
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"images/s{i}.png")
        records.append(SampleRecord(f"s{i}", f"images/s{i}.png", tuple(textures)))
    if bad:
        records += _bad_records(root, size)
    save_metadata(root / "metadata.json", records)
    return root


def _bad_records(root: Path, size: int) -> list[SampleRecord]:
    full = np.ones((size, size), bool)
    save_binary_mask(root / "masks/full.png", full)
    save_binary_mask(root / "masks/empty.png", np.zeros((size, size), bool))
    save_binary_mask(root / "masks/small.png", np.ones((size // 2, size // 2), bool))
    desc = DESCRIPTIONS["brick"]
    return [
        SampleRecord("missing", "images/nope.png", (TextureEntry(desc, "masks/full.png"),)),
        SampleRecord("mismatch", "images/s0.png", (TextureEntry(desc, "masks/small.png"),)),
        SampleRecord("empty", "images/s0.png", (TextureEntry(desc, "masks/full.png"), TextureEntry(desc, "masks/empty.png"))),
        SampleRecord("seven", "images/s0.png", tuple(TextureEntry(desc, "masks/full.png") for _ in range(7))),
    ]
