"""Whose fault is a failed read: the file's (bad input) or the system's (an environment fault)? One rule for every
reader of images, masks and label maps.

The difference decides what a long run does (docs/ARCHITECTURE.md, Where each rule lives): bad input is recorded
against its sample and the run goes on; an environment fault stops the run unfinished and records nothing, so the
same command, run again once the cause is fixed, reads the file. Mistaking one for the other loses data either way:
a permission problem recorded as a bad sample is never read again, and a corrupt file taken for a system failure
stops every re-run at the same place.

* Pillow reports a file it cannot decode (unknown format, truncated or corrupt data) as an ``OSError`` without an
  errno, a header claiming more pixels than ``Image.MAX_IMAGE_PIXELS`` allows as ``DecompressionBombError``, and some
  malformed headers as ``SyntaxError`` or ``ValueError``: the file's fault.
* The operating system reports its own failures as an ``OSError`` carrying an errno: permission denied, I/O error, a
  network disk gone: the environment's fault, except for the few errnos that only describe the path a dataset or a
  user named (:data:`PATH_ERRNOS`): a name too long, a symlink loop, nothing there.
"""

from __future__ import annotations

import errno

from PIL import Image

DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENOENT})


def is_input_fault(exc: BaseException) -> bool:
    """Whether ``exc``, raised while opening or decoding a named file, is that file's fault (module docstring).

    Readers catch :data:`DECODE_ERRORS`, re-raise what this rejects, and turn the rest into a one-line data error
    naming the file.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in PATH_ERRNOS
    return isinstance(exc, DECODE_ERRORS)
