"""Atomic file writes: write to a temporary sibling, flush it to disk, then ``os.replace`` and flush the folder.

A killed process must never leave a half-written checkpoint, metadata file or result line behind; readers either see
the old file or the complete new one. The flushes (``fsync``) carry that over a power loss: without the first, the
rename can reach the disk before the data, leaving a complete-looking name over empty or partial contents (and a
mining result file vouching for images that are not there); without the second, the rename itself may be lost. A
folder's flush is best effort: some platforms refuse it.

``mkstemp`` / ``mkdtemp`` create private (0600 / 0700) entries; the result gets the mode a plain ``open(path, "w")``
/ ``mkdir`` would have given it (an existing file keeps its mode, a new one gets 0666 / 0777 minus the umask, and a
new folder in a setgid folder keeps the setgid bit), so datasets, reports and checkpoints stay readable by whoever
the umask allows, and a shared folder's entries keep its group. The same holds for everything written
inside an :func:`atomic_dir`, whatever library wrote it (safetensors' writer creates its files 0600).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Collection, Iterator


def current_umask() -> int:
    """The process umask. Linux reports it in /proc (no window where another thread sees umask 0); elsewhere it is
    read by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, fresh: int) -> int:
    """What a plain write would leave: the existing entry's permission bits, else ``fresh`` (a new entry's)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return fresh


def _mkdir_mode(made: Path, umask: int) -> int:
    """The mode a plain ``mkdir`` gives the folder ``made``: 0777 minus the umask, and the setgid bit the system gave
    it in a setgid parent (a shared folder whose entries keep the project's group, and whose folders hand the bit
    down), which the chmod to 0777 minus the umask would otherwise drop."""
    return (0o777 & ~umask) | (os.lstat(made).st_mode & stat.S_ISGID)


_OS_ERROR_IN_MESSAGE = re.compile(r"os error (\d+)")
# what a platform or file system answers when it cannot open or fsync a directory (Windows, some network mounts)
_NO_DIRECTORY_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EISDIR,
                                errno.EACCES, errno.EPERM})


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to disk. It is reopened since whoever wrote it (torch, safetensors, PIL) closed
    it; a disk error that only shows at the flush (ENOSPC, EIO) is raised like a failed write."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it, new files) to disk; best effort, as some platforms refuse it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _NO_DIRECTORY_SYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_SYNC:
            raise
    finally:
        os.close(fd)


def _failed_write(exc: Exception, path: Path, tmp: Path) -> OSError | None:
    """The error to report when writing ``path`` through the temporary ``tmp`` failed for a reason of the system
    (disk full, permissions): an ``OSError`` naming ``path`` rather than a hidden temporary or nothing; safetensors'
    writer reports such errors as text ("... (os error 28)"). None for other errors, which propagate unchanged."""
    if isinstance(exc, OSError):
        if exc.filename is not None and not str(exc.filename).startswith(str(tmp)):
            return None
        code = exc.errno
    else:
        match = _OS_ERROR_IN_MESSAGE.search(str(exc))
        code = int(match.group(1)) if match else None
    return None if code is None else OSError(code, os.strerror(code), str(path))


# a temporary is named "." + stem + "." + 8 random characters + ".tmp": 14 bytes more than its stem, and a file
# system takes names of at most 255 bytes
_LONGEST_STEM = 255 - 14
_KEPT_BYTES = 200


def _temporary_stem(name: str) -> str:
    """The part of ``name`` that its temporaries carry: ``name`` itself, or, where that would make the temporary's
    name too long for the file system (a legal 242 to 255-byte name), its first 200 bytes and a hash of the whole, so
    the write still succeeds and two long names sharing a beginning still have distinct temporaries."""
    if len(os.fsencode(name)) <= _LONGEST_STEM:
        return name
    kept = name[:_KEPT_BYTES]
    while len(os.fsencode(kept)) > _KEPT_BYTES:  # cut between characters, not inside one's UTF-8 bytes
        kept = kept[:-1]
    return f"{kept}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{_temporary_stem(path.name)}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # read-only or full file system: name the file the user knows, not a hidden temporary
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync_file(tmp_path)  # before the chmod: the mode a umask gives may not let the owner read it back
        os.chmod(tmp_path, _plain_mode(path, 0o666 & ~current_umask()))
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except Exception as exc:
        failure = _failed_write(exc, path, tmp_path)
        if failure is None:
            raise
        raise failure from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def moved_aside(path: Path) -> Path:
    """Where :func:`atomic_dir` keeps the previous ``path`` while the new one is renamed in."""
    return path.with_name(f".{path.name}.old")


def _give_plain_modes_and_sync(tree: Path) -> None:
    """Give every file and folder below ``tree`` the mode a plain write under the current umask would, and flush
    each to disk (files, then the folder listing them) before the tree is renamed into place. Symbolic links are
    left alone: a chmod would change, and a flush open, what they point to, which may lie outside the tree (or
    nowhere); the link itself is flushed with its folder."""
    umask = current_umask()
    for root, dirs, files in os.walk(tree, topdown=False):
        folder = Path(root)
        for entry in (folder / name for name in dirs if not (folder / name).is_symlink()):
            os.chmod(entry, _mkdir_mode(entry, umask))
        for entry in (folder / name for name in files if not (folder / name).is_symlink()):
            _fsync_file(entry)
            os.chmod(entry, 0o666 & ~umask)
        _fsync_dir(folder)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` (a directory) once the block succeeds.

    Used for multi-file checkpoints: the old checkpoint stays intact until the new one is complete. Replacing an
    existing ``path`` takes two renames (old aside to :func:`moved_aside`, new in); a kill between them leaves only
    the complete old one under the hidden name, which :func:`restore_moved_aside` puts back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_temporary_stem(path.name)}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _give_plain_modes_and_sync(tmp)
        os.chmod(tmp, _plain_mode(path, _mkdir_mode(tmp, current_umask())))
        if path.exists():
            old = moved_aside(path)
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    except Exception as exc:
        failure = _failed_write(exc, path, tmp)
        if failure is None:
            raise
        raise failure from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def restore_moved_aside(path: str | os.PathLike) -> bool:
    """Undo a kill between :func:`atomic_dir`'s two renames: when ``path`` is missing but its moved-aside copy is
    there, rename it back. Safe to call from several processes at once. Returns whether ``path`` exists."""
    path = Path(path)
    old = moved_aside(path)
    if not path.exists() and old.is_dir():
        try:
            os.replace(old, path)
        except FileNotFoundError:  # another process restored it first
            pass
    return path.exists()


# what atomic_path's mkstemp names a temporary: "." + the target's _temporary_stem + "." + 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp")


def remove_temporaries_of(folder: str | os.PathLike, names: Collection[str]) -> list[Path]:
    """Delete the temporaries that killed :func:`atomic_path` writes of ``folder/<name>`` left, for ``names`` only.

    For a folder that several processes write at once (the shares of a launch or a job array): each removes what
    its own killed predecessor left for the files it alone writes, never another process's write in progress. One
    listing of ``folder``, however many names."""
    stems = {_temporary_stem(name) for name in names}
    try:
        with os.scandir(folder) as it:
            stale = [Path(e.path) for e in it if (m := _TEMPORARY.fullmatch(e.name)) and m["stem"] in stems
                     and e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def remove_temporaries(folder: str | os.PathLike, name_glob: str = "*") -> list[Path]:
    """Delete what killed atomic writes of entries named ``name_glob`` in ``folder`` left behind: ``.<name>.*.tmp``
    files and folders (a name too long to carry whole is cut, see :func:`_temporary_stem`: a glob that ends in ``*``
    still matches it), and moved-aside ``.<name>.old`` copies whose ``<name>`` exists again. Call it only while no
    write into ``folder`` is in progress, and after :func:`restore_moved_aside` for anything still needed."""
    folder = Path(folder)
    stale = list(folder.glob(f".{name_glob}.*.tmp"))
    stale += [old for old in folder.glob(f".{name_glob}.old") if (folder / old.name[1:-len(".old")]).exists()]
    for entry in stale:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return stale
