"""Reading a foreign ``torch.save`` checkpoint safely, with one rule for what is wrong with a refused file.

Both converters (the published ``best.pt``, Meta's ``sam3.pt``) read files Detecture did not write. They are opened
with ``weights_only=True`` (nothing in them is executed) and ``mmap=True`` (a multi-GB file is paged in only where
read), which takes torch's zip format. torch's own refusals are written for a developer who trusts the file (they
advise re-running with ``weights_only=False``, which would run whatever the file holds, or changing how it was
saved); a user converting a download needs to hear what the file is and that it was refused, so those messages are
never shown. A system fault while reading (permission, I/O error) is no fault of the file and propagates as the
``OSError`` it is (:func:`~detecture.utils.faults.is_input_fault`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .faults import is_input_fault

ZIP_MAGIC = b"PK\x03\x04"  # every file torch.save writes in its zip format (the default since torch 1.6) starts so


def load_checkpoint(path: Path, file_name: str, missing_hint: str = "") -> Any:
    """The object ``torch.save`` stored in ``path``, loaded on the CPU with ``weights_only`` and ``mmap``.

    Raises one :class:`InputError` naming ``path`` when it is a folder (``file_name`` is the file it should hold),
    no file (``missing_hint`` says where to get it), not torch's zip format, or holds Python objects other than
    tensors and builtins.
    """
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the checkpoint file inside it (e.g. {path / file_name})")
    if not path.is_file():
        raise InputError(f"{path}: no such file{f' ({missing_hint})' if missing_hint else ''}")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(ZIP_MAGIC))
        if magic != ZIP_MAGIC:
            found = "an empty file" if not magic else "torch.save's zip format expected"
            raise InputError(f"{path}: not a torch checkpoint ({found})")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise InputError(f"{path}: holds Python objects that are not tensors{what}; refused for safety (loading them "
                         "could run code)") from None
    except OSError as exc:
        if not is_input_fault(exc):
            raise
        raise InputError(f"{path}: not a readable torch checkpoint ({exc.strerror or exc})") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a readable torch checkpoint (corrupt or truncated: "
                         f"{str(exc).splitlines()[0]})") from None


def tensor_dict(path: Path, value: Any, what: str) -> dict[str, torch.Tensor]:
    """``value`` if it maps strings to tensors, else one :class:`InputError` naming ``path`` and the first offender;
    converters check this once, before anything reads a shape."""
    if not isinstance(value, dict):
        raise InputError(f"{path}: {what} must map parameter names to tensors, found {type(value).__name__}")
    for key, tensor in value.items():
        if not isinstance(key, str):
            raise InputError(f"{path}: {what} has a key {key!r} that is not a parameter name (a string)")
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"{path}: {key} is not a tensor ({type(tensor).__name__})")
    return value
