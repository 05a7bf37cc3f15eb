"""Dataset folder layouts read as unified records: ``metadata.json`` or RWTD's native layout.

The unified format is described in docs/ARCHITECTURE.md, Data.

Training, benchmarking and anything else that reads labelled texture data go through :func:`read_records`, so a
folder that one of them accepts, every one of them accepts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .metadata import METADATA_FILE, SampleRecord, TextureEntry, load_metadata

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
RWTD_MASK_SUFFIXES = ("_mask_a.png", "_mask_b.png")


def rwtd_records(root: Path) -> list[SampleRecord]:
    """Records for RWTD's native layout: ``images/<stem>.<ext>`` with ``textures_mask/<stem>_mask_a|b.png``."""
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{root / 'images'}: no images found")
    return [
        SampleRecord(
            id=p.stem,
            image_path=f"images/{p.name}",
            textures=tuple(TextureEntry("", f"textures_mask/{p.stem}{s}") for s in RWTD_MASK_SUFFIXES),
        )
        for p in images
    ]


def read_records(root: str | Path) -> list[SampleRecord]:
    """The records of a dataset folder in either supported layout; a clear error for anything else."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if (root / METADATA_FILE).exists():
        return load_metadata(root / METADATA_FILE)
    if (root / "images").is_dir() and (root / "textures_mask").is_dir():
        return rwtd_records(root)
    raise DatasetError(f"{root}: neither {METADATA_FILE} nor the RWTD layout (images/ + textures_mask/)")
