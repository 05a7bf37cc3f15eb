"""Small real-texture benchmark sets for the bench tests, built from ``skimage.data`` photos (brick, grass, gravel).

Each sample is a 2-texture mosaic with a known split (vertical, horizontal, diagonal or a disc), stored in RWTD's
native layout (``images/<id>.png`` + ``textures_mask/<id>_mask_a|b.png``) or in the unified metadata layout.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

SIZE = 96
TEXTURES = ("brick", "grass", "gravel")
PAIRS = (("brick", "grass"), ("grass", "gravel"), ("gravel", "brick"))


def split_mask(kind: int, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    if kind == 0:
        return xx < size // 2
    if kind == 1:
        return yy < size * 2 // 5
    if kind == 2:
        return xx + yy < size
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2


def mosaic(index: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Image (size, size, 3) uint8 and mask A (bool) of sample ``index``."""
    a_name, b_name = PAIRS[index % len(PAIRS)]
    off = (index * 37) % (512 - size)
    a = getattr(data, a_name)()[off : off + size, off : off + size]
    b = getattr(data, b_name)()[512 - size - off : 512 - off, off : off + size]
    mask = split_mask(index % 4, size)
    image = np.where(mask, a, b).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2), mask


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def make_rwtd(root: Path, n: int, size: int = SIZE) -> Path:
    """RWTD native layout with ``n`` mosaics under ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = mosaic(i, size)
        Image.fromarray(image).save(root / "images" / f"{i:03d}.png")
        _save_mask(root / "textures_mask" / f"{i:03d}_mask_a.png", mask)
        _save_mask(root / "textures_mask" / f"{i:03d}_mask_b.png", ~mask)
    return root


def make_unified(root: Path, n: int, size: int = SIZE) -> Path:
    """Unified metadata layout with ``n`` mosaics under ``root``."""
    records = []
    for i in range(n):
        image, mask = mosaic(i, size)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"m{i}.png")
        _save_mask(root / "masks" / f"m{i}_a.png", mask)
        _save_mask(root / "masks" / f"m{i}_b.png", ~mask)
        a, b = PAIRS[i % len(PAIRS)]
        records.append({"id": f"m{i}", "image_path": f"images/m{i}.png",
                        "textures": [{"description": f"Texture of {a}", "mask_path": f"masks/m{i}_a.png"},
                                     {"description": f"Texture of {b}", "mask_path": f"masks/m{i}_b.png"}]})
    (root / "metadata.json").write_text(json.dumps(records))
    return root


def write_bomb_png(path: Path, side: int = 50_000) -> Path:
    """A tiny PNG whose header claims ``side`` x ``side`` grey pixels (a decompression bomb at the default side)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(100)))
                     + chunk(b"IEND", b""))
    return path
