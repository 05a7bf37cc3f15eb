"""Reading the project's YAML files (configs, vocabularies) with errors that name the file."""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when PyYAML has it: ~10x faster
    """The safe loader, refusing a key given twice in one mapping: YAML keeps the last silently, so a setting
    repeated further down a file would quietly override the one a reader sees first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' may override keys; the loader merges it
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # refused by the loader itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike, what: str, hint: str = "") -> tuple[Any, bytes]:
    """Parsed YAML and the raw bytes (callers hash them to fingerprint runs); ``what`` names the file in errors,
    ``hint`` says how to fix a missing one."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {what}")
    if not path.is_file():
        raise InputError(f"{path}: {what} not found{hint}")
    raw = path.read_bytes()
    try:
        return yaml.load(raw, Loader=_Loader), raw
    except yaml.YAMLError as exc:  # PyYAML's message spans lines; an error here is one line
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise InputError(f"{path}: not valid YAML ({where}{problem})") from None
