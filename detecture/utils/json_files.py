"""The small JSON files of checkpoint and run folders (a head's or an adapter's config, a run's recorded settings):
one rule for what is wrong with one, so every reader names the file the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, DetectureError


def read_json_object(path: Path, what: str, error: type[DetectureError] = CheckpointError) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is no UTF-8 JSON, or holds no object at its top level, is one
    ``error`` naming it (``what`` says which file it should have been)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # a syntax error, bytes that are not UTF-8, absurd nesting
        raise error(f"{path}: malformed {what} ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
