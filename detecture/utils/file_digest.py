"""Content digests of files, for keys of derived data that must change whenever the files' bytes do.

A content hash rather than size and modification time: a file rewritten in place with other bytes of the same size
within the file system's time resolution (or copied with its times kept) would keep a stat signature, and a stale
derived result would then be reused silently. Hashing reads the files once, which is cheap next to what such a key
guards (minutes of feature extraction).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

CHUNK = 1 << 20


def feed_file(digest: "hashlib._Hash", path: Path) -> None:
    """Feed the bytes of ``path`` into ``digest``, read in chunks (raises ``OSError`` when it cannot be read); the
    caller separates files, so that two never read as one."""
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)


def files_digest(root: Path, names: Iterable[str]) -> str:
    """sha256 over each named file under ``root``, in the order given: its name (relative to ``root``) and bytes, so
    that renaming a file, moving bytes from one file to another, or editing any one changes the digest."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        feed_file(digest, Path(root) / name)
        digest.update(b"\0")
    return digest.hexdigest()
