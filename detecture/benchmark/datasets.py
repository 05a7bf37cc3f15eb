"""Benchmark datasets: the unified metadata layout and RWTD's native layout, as one list of records.

The layouts are described in docs/ARCHITECTURE.md, Data.

A dataset is named on the command line either by a folder name under the datasets root (``--data-root`` or
``$DETECTURE_DATASETS_ROOT``; matched case-insensitively, so ``rwtd`` finds ``RWTD/``) or by a path. Every record's
paths are checked against the root when the dataset is opened, so a path-traversal attempt fails before any model
loads. Per-sample problems (unreadable image, mask size mismatch) surface when the sample is read and are recorded as
that sample's failure by the runner.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..data.layouts import check_paths, read_records
from ..data.metadata import LoadedSample, SampleRecord, datasets_root, load_sample
from ..errors import DatasetError
from .scoring import GroundTruth, ground_truth
from ..utils.file_digest import feed_file
from ..utils.paths import require_dir


@dataclass(frozen=True)
class BenchDataset:
    """A dataset ready to iterate: display name, root folder and validated records."""

    name: str
    root: Path
    records: list[SampleRecord]

    @property
    def key(self) -> str:
        """Lower-case name used for the regime table."""
        return self.name.lower()

    def digest(self, record: SampleRecord) -> str:
        """A digest of a record and of the bytes of every file it names. A result belongs to the sample as it was
        scored: one whose files changed since (a failed sample's file fixed, a dataset rebuilt under the same folder
        name) is scored again, while moving or copying the dataset changes nothing. A file that cannot be read
        counts as such (the sample fails when it is read)."""
        digest = hashlib.sha256(json.dumps(record.to_json(), sort_keys=True).encode())
        for path in (record.image_path, *(t.mask_path for t in record.textures)):
            add_file(digest, self.root / path)
        return digest.hexdigest()[:16]

    def load(self, record: SampleRecord, protocol: str = "ours") -> tuple[LoadedSample, GroundTruth, list[str]]:
        """Read one sample; returns it with its ground truth as ``protocol``'s scorer builds it (once: the caller
        scores against it) and warnings for masks that are no region of it (:meth:`~.scoring.GroundTruth.notes`):
        reported, not fatal, because the sample can still be scored."""
        sample = load_sample(self.root, record)
        truth = ground_truth(sample.masks, protocol)
        notes = truth.notes()
        return sample, truth, [notes[i].format(mask=record.textures[i].mask_path) for i in sorted(notes)]


def add_file(digest: hashlib._Hash, path: Path) -> None:
    """Feed the bytes of ``path`` into ``digest``, after a separator so that two files never read as one; a file
    that cannot be read counts as such (whoever reads it for scoring fails that sample). Every input a result
    depends on is digested this way, the dataset's files and a method's own (a precomputed prediction)."""
    digest.update(b"\0")
    try:
        feed_file(digest, path)
    except OSError:
        digest.update(b"\0unreadable")


# Where a user who has no datasets yet learns where the default ones are published and what layout is read.
WHERE_TO_GET = "'Getting the datasets' in docs/benchmark.md says where to download the default ones"


def find_dataset(spec: str, data_root: str | os.PathLike | None = None) -> Path:
    """A dataset folder: a spec with a path separator (or starting with ``.`` / ``~``) is a path, anything else a
    folder name under the datasets root. A folder of that name in the current directory is never used silently: it
    is named in the error when the root has no such dataset, and when both exist the user is asked to choose."""
    if "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        return require_dir(Path(spec).expanduser(), "dataset folder")
    local = Path(spec) if Path(spec).is_dir() else None
    here = f"; ./{spec} is a folder here: write ./{spec} to use it" if local else ""
    root = Path(data_root).expanduser() if data_root else datasets_root()  # an explicit --data-root beats the env
    if not root.is_dir():
        raise DatasetError(f"dataset {spec!r}: datasets root {root} does not exist (use --data-root or "
                           f"$DETECTURE_DATASETS_ROOT; {WHERE_TO_GET}){here}")
    matches = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() == spec.lower()]
    if not matches:
        raise DatasetError(f"dataset {spec!r}: no folder of that name under {root} ({WHERE_TO_GET}){here}")
    if local is not None and local.resolve() != matches[0].resolve():
        raise DatasetError(f"dataset {spec!r}: both {matches[0]} (datasets root) and ./{spec} exist; write "
                           f"{matches[0]} or ./{spec} to say which")
    return matches[0]


def open_dataset(spec: str, data_root: str | os.PathLike | None = None) -> BenchDataset:
    """Open a dataset by name or path, validate its layout and every record's paths."""
    root = find_dataset(spec, data_root)
    records = read_records(root)
    if not records:
        raise DatasetError(f"{root}: dataset has no records")
    check_paths(root, records)
    # named by its folder as given, with "." and ".." (which have no name of their own) made absolute, but without
    # following a symbolic link: the name picks the protocol's regime, and a link is how a folder is given a name
    return BenchDataset(name=Path(os.path.abspath(root)).name, root=root, records=records)


def image_stem(record: SampleRecord) -> str:
    return Path(record.image_path).stem
