"""Checks on what a command reads and writes, run before any model loads.

Two rules every command follows through these helpers:

* cheap things fail first: a missing or unreadable input, a file where a folder is expected, an output folder that
  cannot be created; each is one ``error:`` line naming the path, seconds after start, not after an 8B model load;
* no command writes over its inputs: file outputs are compared with the resolved input paths (:class:`InputSet`), and
  an output folder may neither be an input folder, nor contain one (commands also delete inside their output folder:
  ``bench --force``, checkpoint rotation), nor lie inside one: datasets, checkpoints and textured-variant trees are
  read at any depth, so an output written there would replace inputs (``mine --textured-root T --out T/eta_0.3``)
  or be read back as one by the next run. Only folders read one level deep (``segment photos/``) may hold it.
  Nor may it hold an input file: ``train``, ``mine`` and ``bench`` write fixed names there (``train --config
  OUT/config.json --out OUT`` would replace the user's config with the run's). Only ``segment``, which numbers its
  output names around its inputs, may write next to its images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from ..errors import InputError

PathLike = str | os.PathLike


def resolved(path: PathLike) -> Path:
    """Absolute path with symlinks and ``..`` resolved, so two spellings of one file compare equal."""
    return Path(path).expanduser().resolve()


def printable(path: PathLike) -> str:
    """``path`` as text a UTF-8 file or terminal can hold: the bytes of a name that are not UTF-8 (which Python keeps
    as lone surrogates) are written as ``\\xff`` escapes. Every path recorded in a JSON output or printed in a table
    goes through it, so a file named in Latin-1 is still segmented and mined, and its name can be read. Any text
    will do (a command-line argument reaches Python the same way); a surrogate that stands for no byte is escaped as
    itself (``\\udc00``)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


DEFAULT_NAME_MAX = 255  # bytes: what most file systems take, where the folder's cannot say


def name_max(folder: PathLike) -> int:
    """The longest file name, in bytes, the file system of ``folder`` takes; asked of its nearest existing folder,
    since an output folder may not be made yet."""
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or the system cannot say
        return DEFAULT_NAME_MAX
    return limit if limit > 0 else DEFAULT_NAME_MAX


def require_file(path: PathLike, what: str = "file") -> Path:
    """An existing, readable file (``what`` names it in the error)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: {what} is not readable (permission denied)")
    return path


def require_dir(path: PathLike, what: str = "folder") -> Path:
    """An existing, listable folder: a file there says so instead of "not found"."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_dir():
        raise InputError(f"{path}: is a file, expected a folder ({what})")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(f"{path}: {what} is not readable (permission denied)")
    return path


def require_writable_dir(path: PathLike, option: str = "--out") -> Path:
    """A folder that exists and is writable, or can be created (its nearest existing parent is a writable folder)."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise InputError(f"{option} {path}: {where}, expected a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise InputError(f"{option} {path}: {where}")
    _try_writing(path, probe, option)
    return path


def _try_writing(path: Path, probe: Path, option: str) -> None:
    """Permission bits do not tell everything (``/proc``, read-only mounts, root's access): create and remove a
    temporary file in ``path`` or, where it does not exist yet, a temporary folder in its nearest existing parent, and
    report what the system said."""
    try:
        if probe == path:
            with tempfile.TemporaryFile(dir=path):
                pass
        else:  # a uniquely named folder: runs started together (ranks of one launch) must not race on one name
            os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".detecture-probe-"))
    except OSError as exc:
        where = "is not writable" if probe == path else "cannot be created"
        raise InputError(f"{option} {path}: {where} ({exc.strerror or exc})") from None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class InputSet:
    """The resolved inputs of one command run: the files and folders it reads and must never write over.

    ``flat``: its folders are read only one level deep (their sub-folders never), so an output folder may lie in one.
    """

    def __init__(self, paths: Iterable[PathLike | None] = (), *, flat: bool = False) -> None:
        self.paths = {resolved(p) for p in paths if p is not None}
        self.flat = flat

    def __contains__(self, path: PathLike) -> bool:
        return resolved(path) in self.paths

    def check_output(self, path: PathLike) -> Path:
        """``path`` unless it is one of the inputs (then an error naming it): for an output file the user names."""
        if path in self:
            raise InputError(f"{path}: is an input of this command; refusing to overwrite it (choose another --out)")
        return Path(path)

    def check_output_dir(self, out: PathLike, option: str = "--out", *, names_avoid_inputs: bool = False) -> Path:
        """A writable output folder that is not an input folder, holds no input (folder or file) and lies in no input
        folder unless ``flat``. ``names_avoid_inputs``: the command picks output names that never equal an input
        (segment's numbered names), so input files may lie in the folder; input folders still may not."""
        out = require_writable_dir(out, option)
        target = resolved(out)
        for path in sorted(self.paths):
            is_dir = path.is_dir()
            if _inside(path, target) and (is_dir or not names_avoid_inputs):
                relation = "is" if path == target else "contains"
            elif is_dir and _inside(target, path) and not self.flat:
                relation = "is inside"
            else:
                continue
            kind = "folder" if is_dir else "file"
            raise InputError(f"{option} {out}: {relation} the input {kind} {path}; choose a separate output "
                             "folder (a command never writes over its inputs)")
        return out
