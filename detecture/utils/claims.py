"""Claiming work in a folder that several runs share: an exclusive lock on the folder, and who holds a claim.

One rule for every command whose runs may share an output folder (``segment``'s output names, ``mine``'s scenes): a
run records a claim naming its process (:func:`this_process`) under :func:`folder_lock` before it starts an item,
and skips an item another live process claimed (:func:`is_alive`). A claim left by a dead process (same host,
process gone; or another host, whose process cannot be checked) is taken over by the next run. On a file system
that cannot lock a folder (NFS, Lustre without flock) runs go on unlocked after a warning (:func:`folder_lock`).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no folder lock; claims still never overwrite a finished output
    fcntl = None

log = logging.getLogger(__name__)

# What flock answers where the file system cannot lock a folder: NFS, where Linux emulates flock with POSIX locks,
# which need a file open for writing (EBADF); Lustre mounted without flock (ENOSYS, EOPNOTSUPP); no lock left (ENOLCK)
_CANNOT_LOCK = frozenset({errno.EBADF, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK})
_warned: set[str] = set()
_warned_lock = threading.Lock()


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file among the outputs), released even by ``kill -9``. The
    folder is made if missing, and made and locked again if it was removed while this waited for the lock
    (:func:`remove_if_empty`), so the holder never writes into a removed folder.

    Where the file system cannot lock it (:data:`_CANNOT_LOCK`), the run goes on without the lock, as on Windows,
    after one warning per folder: a single run is unaffected, and refusing would stop every run on such a cluster
    file system; only runs sharing the folder at the same time lose their protection from each other."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            _lock(fd, folder)
            if _names(folder, fd):
                yield
                return
        finally:
            os.close(fd)


def _lock(fd: int, folder: Path) -> None:
    """Lock the open ``folder`` exclusively, or warn once and go on where its file system cannot lock it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno not in _CANNOT_LOCK:
            raise
        _warn_unlocked(folder, exc)


def _names(folder: Path, fd: int) -> bool:
    """Whether the path ``folder`` still names the folder open as ``fd``."""
    try:
        now = os.stat(folder)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def remove_if_empty(folder: Path) -> bool:
    """Remove ``folder`` if it holds nothing (whether it was removed), under its lock: a run that shares it and is
    about to claim work there waits, then makes it again (:func:`folder_lock`)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # gone already, or not a folder this process may open
        return False
    try:
        if fcntl is not None:
            _lock(fd, folder)
        try:
            folder.rmdir()
        except OSError:  # not empty: another run's, or this one's, files are there
            return False
        return True
    finally:
        os.close(fd)


def _warn_unlocked(folder: Path, exc: OSError) -> None:
    key = os.path.abspath(folder)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning("%s: this folder cannot be locked (%s; its file system does not support flock), so runs sharing it "
                "must not run at the same time", folder, exc.strerror or exc)


def this_process() -> dict[str, object]:
    """The owner a claim records: this host and process."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def is_alive(owner: object) -> bool:
    """Whether the process a claim names still runs; a claim from another host counts as dead (it cannot be
    checked), as does one that names no process."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True
