"""The small JSON files of checkpoint folders (a head's config, an adapter's config): one rule for what is wrong
with one, so every reader names the file the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is no UTF-8 JSON, or holds no object at its top level, is one
    :class:`CheckpointError` naming it (``what`` says which file it should have been)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # a syntax error, bytes that are not UTF-8, absurd nesting
        raise CheckpointError(f"{path}: malformed {what} ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
