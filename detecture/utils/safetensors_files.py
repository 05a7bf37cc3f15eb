"""Safetensors weight files checked from their header alone, so a cut or corrupt file is found in milliseconds,
before any model loads, and reported the same way wherever it sits (a head's weights, an adapter's)."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError
from .paths import printable


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in ``path``, read off its header without the tensors; a file whose header or
    data is cut short, or that is no safetensors file, is a :class:`CheckpointError` naming it.

    A file that cannot be opened (permission denied, an I/O error) raises the system's ``OSError``: an environment
    fault, as for the checkpoint's JSON config. The file is opened here first because safetensors' reader words such
    a failure as its own error, with the wrong cause ("No such file or directory" for permission denied). A path
    that is not UTF-8 (a folder named in Latin-1) is refused by name: safetensors' reader cannot open one, and would
    call the file corrupt."""
    with open(path, "rb"):
        pass
    if printable(path) != str(path):
        raise CheckpointError(f"{printable(path)}: the path is not valid UTF-8, which the safetensors reader cannot "
                              "open; rename the folder or file")
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from None
