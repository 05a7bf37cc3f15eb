"""Per-cell result storage: append-only JSONL shards that survive a kill, merged once a cell is complete.

Layout under the output folder::

    cells/<dataset>/<method>/part-<rank>.jsonl   one line per finished sample, appended by process <rank>
    cells/<dataset>/<method>/samples.jsonl       the merged, dataset-ordered result of a complete cell
    cells/<dataset>/<method>/settings.json       what the results were made with (regime, method settings)
    partitions/<dataset>/<method>/<id>.png       predicted label maps of the gallery samples

Names become folder and file names through :func:`safe_name`; ``<method>`` is ``<name>@published`` for the published
protocol's cells (``@`` is never in a safe name, so no method's folder can be another's). Two datasets or methods
whose folders would be one are refused (:func:`check_distinct`), and a sample id's file name is made unique
(:func:`sample_file_stem`): otherwise one cell's results would be reported under another's name.

A line is written with one ``write`` + ``fsync``; a kill can at worst leave a torn last line, which readers ignore and
the next append first cuts off. Every process appends only to its own shard, so sharded runs never interleave.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from ..errors import InputError
from ..utils import atomic
from ..utils.json_files import read_json_object

log = logging.getLogger(__name__)

MERGED = "samples.jsonl"
SETTINGS = "settings.json"
FINISHED = "finished"  # a record's key: when its sample finished, in seconds since the epoch
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file-system-safe version of a dataset, method or sample name."""
    return _SAFE.sub("_", name).strip("._") or "_"


MAX_STEM = 100  # characters of a sample id kept in a file name; file systems allow 255 bytes per name


def method_folder(method: str, protocol: str = "ours") -> str:
    return safe_name(method) + ("" if protocol == "ours" else f"@{protocol}")


def cell_dir(out: Path, dataset: str, method: str, protocol: str = "ours") -> Path:
    return out / "cells" / safe_name(dataset) / method_folder(method, protocol)


def sample_file_stem(sample_id: str) -> str:
    """The id itself when it is a short safe name; else its safe form, cut short, plus a digest of the id, so two ids
    never share a file and no id is too long for a file name."""
    safe = safe_name(sample_id)
    if safe == sample_id and len(safe) <= MAX_STEM:
        return safe
    return f"{safe[:MAX_STEM]}-{hashlib.sha256(sample_id.encode()).hexdigest()[:12]}"


def partition_dir(out: Path, dataset: str, method: str, protocol: str = "ours") -> Path:
    return out / "partitions" / safe_name(dataset) / method_folder(method, protocol)


def partition_path(out: Path, dataset: str, method: str, protocol: str, sample_id: str) -> Path:
    return partition_dir(out, dataset, method, protocol) / f"{sample_file_stem(sample_id)}.png"


def clear_cell(out: Path, dataset: str, method: str, protocol: str = "ours") -> None:
    """Delete a cell's results and its gallery partitions (``--force``): a partition left behind would be drawn in
    the gallery beside the new result of its sample, even where that sample now failed."""
    for folder in (cell_dir(out, dataset, method, protocol), partition_dir(out, dataset, method, protocol)):
        shutil.rmtree(folder, ignore_errors=True)


def drop_records(out: Path, dataset: str, method: str, protocol: str, ids: Iterable[str]) -> None:
    """Delete the results and gallery partitions of the samples ``ids`` of a cell and keep its others (``--force``
    with ``--limit``: only the samples the run redoes lose their results)."""
    directory = cell_dir(out, dataset, method, protocol)
    drop = set(ids)
    records = read_cell(directory)
    _replace_records(directory, [r for i, r in records.items() if i not in drop])
    for sample_id in drop:
        partition_path(out, dataset, method, protocol, sample_id).unlink(missing_ok=True)


def check_distinct(what: str, named: list[tuple[str, str]], remedy: str) -> None:
    """Refuse two ``(label, name)`` entries whose names make one folder (compared case-insensitively, as some file
    systems compare them): they would share one cell, and each would be reported with the other's results."""
    seen: dict[str, str] = {}
    for label, name in named:
        folder = safe_name(name)
        first = seen.setdefault(folder.lower(), label)
        if first is label:
            continue
        if first == label:
            raise InputError(f"{what} {label} is given twice")
        raise InputError(f"{what}s {first} and {label} would share the result folder {folder!r}; {remedy}")


def _read_lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                log.info("%s: ignoring a torn last line (interrupted write)", path)
                continue
            try:
                yield json.loads(line)  # bytes: a line that is not UTF-8 is unreadable like any other
            except ValueError:
                log.warning("%s: ignoring an unreadable line", path)


def read_cell(directory: Path) -> dict[str, dict[str, Any]]:
    """All recorded samples of a cell by id; of several records of one id (a ``--retry-failed`` rerun), the one
    finished last wins.

    Time decides, not the order of the files: a retry is appended to the shard of the process that reran it, which
    can come before the shard holding the old failure (job-array shards, then a whole run). Records without a
    ``finished`` time, written before it was recorded, count as older than any with one and otherwise go by file
    order (merged file first, then shards)."""
    records: dict[str, dict[str, Any]] = {}
    files = ([directory / MERGED] if (directory / MERGED).exists() else []) + sorted(directory.glob("part-*.jsonl"))
    for path in files:
        for rec in _read_lines(path):
            if isinstance(rec, dict) and "id" in rec:
                held = records.get(str(rec["id"]))
                if held is None or _finished(rec) >= _finished(held):
                    records[str(rec["id"])] = rec
    return records


def _finished(record: dict[str, Any]) -> float:
    value = record.get(FINISHED)
    return float(value) if isinstance(value, (int, float)) else float("-inf")


class ShardWriter:
    """Appends result lines to ``part-<rank>.jsonl``, first cutting off a torn line left by a killed run."""

    def __init__(self, directory: Path, rank: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"part-{rank}.jsonl"
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with self.path.open("r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        with self._naming_the_file():
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._naming_the_file():  # closing flushes what a failed write left buffered, and fails the same way
            self._fh.close()

    @contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        """A failed write or flush (disk full) names no file; the user must learn which one."""
        try:
            yield
        except OSError as exc:
            if exc.filename is not None or exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None


def merge_cell(directory: Path, order: list[str]) -> None:
    """Write ``samples.jsonl`` atomically in dataset order, then drop the shards it now contains.

    Records outside ``order`` (e.g. beyond this run's ``--limit``) are kept, after the ordered ones.
    """
    records = read_cell(directory)
    if not records:
        return
    ordered = set(order)
    ranked = [i for i in order if i in records] + [i for i in records if i not in ordered]
    _replace_records(directory, [records[i] for i in ranked])


def _replace_records(directory: Path, records: list[dict[str, Any]]) -> None:
    """Make ``records`` the cell's whole content: the merged file written atomically (removed when there are none),
    then the shards dropped. A kill between the two leaves shards that only repeat or outdate merged lines, which
    the same command run again settles."""
    if records:
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        atomic.write_text(directory / MERGED, "".join(line + "\n" for line in lines))
    else:
        (directory / MERGED).unlink(missing_ok=True)
    for shard in directory.glob("part-*.jsonl"):
        shard.unlink()


# Settings keys recorded only since a later version (dotted): a cell whose record lacks one was scored before the
# key was recorded, not under another value of it, so its results are kept (and the key recorded from then on).
RECORDED_LATER = frozenset({"method.head_files"})


def settings_change(directory: Path, settings: dict[str, Any]) -> str | None:
    """How ``settings`` differ from those the cell's results were made with (``"key: old → new"``, nested keys
    dotted), or ``None`` when they agree or the cell recorded none. ``settings`` are compared as JSON stores them;
    a key of :data:`RECORDED_LATER` the record lacks is no change."""
    path = directory / SETTINGS
    if not path.exists():
        return None
    try:
        recorded = read_json_object(path, "settings record", InputError)
    except InputError as exc:
        return str(exc)
    current = json.loads(json.dumps(settings))
    if recorded == current:
        return None
    old, new = _flat(recorded), _flat(current)
    changed = [f"{k}: {old.get(k, '(unset)')} → {new.get(k, '(unset)')}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k) and not (k in RECORDED_LATER and k not in old)]
    return "; ".join(changed) or None


def write_settings(directory: Path, settings: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    atomic.write_json(directory / SETTINGS, settings)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def save_partition(path: Path, labels: np.ndarray) -> None:
    with atomic.atomic_path(path) as tmp:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(tmp, format="PNG")


def load_partition(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    with Image.open(path) as im:
        return np.asarray(im)
