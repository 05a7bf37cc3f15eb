"""Reading the project's YAML files (configs, vocabularies) with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

# libyaml's loader when PyYAML was built with it: same YAML 1.1 rules, ~10x faster than the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | os.PathLike, what: str, hint: str = "") -> tuple[Any, bytes]:
    """Parsed YAML and the raw bytes (callers hash them to fingerprint runs); ``what`` names the file in errors,
    ``hint`` says how to fix a missing one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found{hint}")
    raw = path.read_bytes()
    try:
        return yaml.load(raw, Loader=_LOADER), raw
    except yaml.YAMLError as exc:  # PyYAML's message spans lines; an error here is one line
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise InputError(f"{path}: not valid YAML ({where}{problem})") from None
