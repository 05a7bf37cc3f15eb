"""The small JSON files users and runs hand to Detecture (a head's or an adapter's config, a run's recorded settings,
a dataset's metadata, the miner's mapping): one rule for what is wrong with one, so every reader names the file and
the fault the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, DetectureError


def read_json(path: Path, what: str, error: type[DetectureError] = CheckpointError) -> Any:
    """The JSON value in ``path``; a file that is no UTF-8 JSON is one ``error`` naming it (``what`` says which file
    it should have been). A missing file raises the ``FileNotFoundError`` it is, for the caller to word."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # the parser recurses per nesting level; none of these files nests more than a few
        raise error(f"{path}: malformed {what} (JSON nested too deeply)") from None
    except ValueError as exc:  # a syntax error, bytes that are not UTF-8, an integer of over 4300 digits
        raise error(f"{path}: malformed {what} (not valid JSON: {exc})") from None


def read_json_object(path: Path, what: str, error: type[DetectureError] = CheckpointError) -> dict[str, Any]:
    """:func:`read_json` for a file that must hold an object at its top level."""
    data = read_json(path, what, error)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
