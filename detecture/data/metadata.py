"""The unified metadata format shared by training, the miner and the benchmark (docs/ARCHITECTURE.md, Data).

A dataset is a folder with a ``metadata.json`` holding a JSON list of records::

    {"id": "...", "image_path": "images/x.jpg",
     "textures": [{"description": "Texture of ...", "mask_path": "masks/x_0.png"}, ...]}

Paths are relative to the dataset root and may never resolve outside it: metadata is data, and data from the
internet must not be able to make us read ``/etc/passwd``. Records may carry extra keys (``scene``, ``split``,
``degree`` ...); they are kept in :attr:`SampleRecord.extra`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from ..errors import DatasetError, InputError
from ..images import as_rgb_array, load_image, open_image
from ..utils import atomic
from ..utils.json_files import read_json

DATASETS_ROOT_ENV = "DETECTURE_DATASETS_ROOT"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class TextureEntry:
    description: str
    mask_path: str


@dataclass(frozen=True)
class SampleRecord:
    id: str
    image_path: str
    textures: tuple[TextureEntry, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "image_path": self.image_path}
        out["textures"] = [{"description": t.description, "mask_path": t.mask_path} for t in self.textures]
        out.update(self.extra)
        return out


def datasets_root(default: str | os.PathLike | None = None) -> Path:
    """Where named datasets live: ``$DETECTURE_DATASETS_ROOT`` if set, else ``default`` (else ``./datasets``)."""
    env = os.environ.get(DATASETS_ROOT_ENV)
    return Path(env or default or "datasets").expanduser()


def resolve_within(root: str | os.PathLike, relative: str, *, source: str = "metadata",
                   what: str = "the dataset root") -> Path:
    """Resolve ``relative`` under ``root``; refuse absolute paths and anything escaping the root (incl. symlinks).

    ``what`` names the root in the error (a predictions folder is not a dataset root). A symlink loop is refused
    here too: Python 3.10-3.12 raise ``RuntimeError`` for it while resolving, which is a fault of the data.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise DatasetError(f"{source}: empty or non-string path {relative!r}")
    if "\0" in relative:
        raise DatasetError(f"{source}: path {relative!r} holds a NUL character")
    if os.path.isabs(relative) or relative.startswith(("\\", "~")):
        raise DatasetError(f"{source}: path {relative!r} is absolute; paths must be relative to {what}")
    root_resolved = Path(root).resolve()
    try:
        candidate = (root_resolved / relative).resolve()
    except RuntimeError:
        raise DatasetError(f"{source}: path {relative!r} is a symlink loop") from None
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise DatasetError(f"{source}: path {relative!r} escapes {what} {root_resolved}")
    return candidate


def _require(cond: bool, source: str, message: str) -> None:
    if not cond:
        raise DatasetError(f"{source}: {message}")


def parse_records(data: Any, *, source: str = "metadata") -> list[SampleRecord]:
    """Validate the JSON structure and build records; errors name the record index and the field."""
    _require(isinstance(data, list), source, f"expected a JSON list of records, got {type(data).__name__}")
    records: list[SampleRecord] = []
    seen: set[str] = set()
    for i, raw in enumerate(data):
        where = f"{source}: record {i}"
        _require(isinstance(raw, dict), where, f"expected an object, got {type(raw).__name__}")
        for key in ("id", "image_path", "textures"):
            _require(key in raw, where, f"missing required key '{key}'")
        rid, image_path, textures = raw["id"], raw["image_path"], raw["textures"]
        _require(isinstance(rid, (str, int)) and str(rid) != "", where, "'id' must be a non-empty string")
        _require(str(rid) not in seen, where, f"duplicate id {rid!r}")
        seen.add(str(rid))
        _require(isinstance(image_path, str) and image_path != "", where, "'image_path' must be a non-empty string")
        _require(isinstance(textures, list), where, "'textures' must be a list")
        entries = []
        for j, t in enumerate(textures):
            _require(isinstance(t, dict) and "mask_path" in t, where, f"texture {j} needs a 'mask_path'")
            _require(isinstance(t["mask_path"], str), where, f"texture {j}: 'mask_path' must be a string")
            desc = t.get("description", "")
            _require(isinstance(desc, str), where, f"texture {j}: 'description' must be a string")
            entries.append(TextureEntry(description=desc, mask_path=t["mask_path"]))
        extra = {k: v for k, v in raw.items() if k not in ("id", "image_path", "textures")}
        records.append(SampleRecord(id=str(rid), image_path=image_path, textures=tuple(entries), extra=extra))
    return records


def load_metadata(path: str | os.PathLike) -> list[SampleRecord]:
    """Read and validate a metadata file (a dataset folder is accepted and means ``folder/metadata.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE
    if not path.exists():
        raise DatasetError(f"{path}: metadata file not found")
    return parse_records(read_json(path, "metadata file", DatasetError), source=str(path))


def save_metadata(path: str | os.PathLike, records: Iterable[SampleRecord]) -> None:
    """Write records atomically, in the given order (callers sort for byte-identical output)."""
    atomic.write_json(path, [r.to_json() for r in records])


def load_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask PNG as a boolean array (> 127 is inside); errors name the file."""
    try:
        with open_image(path, "mask") as im:
            arr = np.asarray(im.convert("L"))
    except InputError as exc:
        raise DatasetError(str(exc)) from None
    return arr > 127


def save_binary_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a boolean mask as a 0/255 PNG atomically."""
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(tmp, format="PNG")


@dataclass(frozen=True)
class LoadedSample:
    """A record with its image (H, W, 3 uint8) and masks (K, H, W bool) read and checked."""

    record: SampleRecord
    image: np.ndarray
    masks: np.ndarray

    @property
    def descriptions(self) -> list[str]:
        return [t.description for t in self.record.textures]


def load_sample(root: str | os.PathLike, record: SampleRecord) -> LoadedSample:
    """Read a record's image and masks, enforcing the safety and consistency rules.

    Raises :class:`DatasetError` (naming the file) for escaping paths, unreadable files, and masks whose size differs
    from the image. Empty masks are *not* an error here: callers decide (training skips, benchmark reports).
    """
    source = f"record {record.id!r}"
    image_file = resolve_within(root, record.image_path, source=source)
    try:
        image = as_rgb_array(load_image(image_file))
    except InputError as exc:
        raise DatasetError(str(exc)) from None
    h, w = image.shape[:2]
    masks = []
    for t in record.textures:
        mask_file = resolve_within(root, t.mask_path, source=source)
        mask = load_binary_mask(mask_file)
        if mask.shape != (h, w):
            raise DatasetError(
                f"{mask_file}: mask is {mask.shape[1]}x{mask.shape[0]} but image {image_file.name} is {w}x{h}"
            )
        masks.append(mask)
    stacked = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return LoadedSample(record=record, image=image, masks=stacked)
