"""Dataset folder layouts read as unified records: ``metadata.json`` or RWTD's native layout.

The unified format is described in docs/ARCHITECTURE.md, Data.

Training, benchmarking and anything else that reads labelled texture data go through :func:`read_records`, so a
folder that one of them accepts, every one of them accepts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .metadata import METADATA_FILE, SampleRecord, TextureEntry, load_metadata, resolve_within

# The suffixes of image files taken from a folder or pattern, by `segment`, dataset layouts and the miner alike: the
# formats every input path reads (detecture.images.load_image). A GIF is read as Pillow opens it, at its first frame,
# whether named on the command line or found in a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp")
RWTD_MASK_SUFFIXES = ("_mask_a.png", "_mask_b.png")


def check_unique_stems(images: list[Path]) -> None:
    """Refuse two images with one stem (``x.jpg`` and ``x.png``): the stem is the record id and names the masks, so
    both would be one sample read twice, its result counted twice (as :func:`load_metadata` refuses a duplicate id)."""
    first: dict[str, Path] = {}
    for path in images:
        if path.stem in first:
            raise DatasetError(f"{path.parent}: {first[path.stem].name} and {path.name} share the stem "
                               f"{path.stem!r}, which is the sample id in the RWTD layout; keep one of them")
        first[path.stem] = path


def rwtd_records(root: Path) -> list[SampleRecord]:
    """Records for RWTD's native layout: ``images/<stem>.<ext>`` with ``textures_mask/<stem>_mask_a|b.png``."""
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{root / 'images'}: no images found")
    check_unique_stems(images)
    return [
        SampleRecord(
            id=p.stem,
            image_path=f"images/{p.name}",
            textures=tuple(TextureEntry("", f"textures_mask/{p.stem}{s}") for s in RWTD_MASK_SUFFIXES),
        )
        for p in images
    ]


def metadata_file(root: Path) -> Path | None:
    """The folder's ``metadata.json``, or None: its presence alone decides the layout."""
    path = root / METADATA_FILE
    return path if path.exists() else None


def read_records(root: str | Path) -> list[SampleRecord]:
    """The records of a dataset folder in either supported layout; a clear error for anything else."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    metadata = metadata_file(root)
    if metadata is not None:
        return load_metadata(metadata)
    if (root / "images").is_dir() and (root / "textures_mask").is_dir():
        return rwtd_records(root)
    raise DatasetError(f"{root}: neither {METADATA_FILE} nor the RWTD layout (images/ + textures_mask/)")


def check_paths(root: Path, records: list[SampleRecord]) -> None:
    """Refuse the dataset when any record's path leaves ``root`` (:func:`resolve_within`). The error names where the
    path came from: the metadata file and the record, or in RWTD's layout, which has no metadata file (its paths are
    listed from its folders), the offending file itself."""
    metadata = metadata_file(root)
    for record in records:
        for path in (record.image_path, *(t.mask_path for t in record.textures)):
            resolve_within(root, path, source=f"{metadata}: record {record.id!r}" if metadata else str(root / path))
