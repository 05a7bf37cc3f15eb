"""Claiming work in a folder that several runs share: an exclusive lock on the folder, and who holds a claim.

One rule for every command whose runs may share an output folder (``segment``'s output names, ``mine``'s scenes): a
run records a claim naming its process (:func:`this_process`) under :func:`folder_lock` before it starts an item,
and skips an item another live process claimed (:func:`is_alive`). A claim left by a dead process (same host,
process gone; or another host, whose process cannot be checked) is taken over by the next run.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no folder lock; claims still never overwrite a finished output
    fcntl = None


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder itself (no lock file among the outputs), released even by ``kill -9``."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
