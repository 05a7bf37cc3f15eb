"""The performance scripts under perf/ run outside the suite (their numbers belong in perf/RESULTS.md), so nothing
else notices when one of them imports a name the package no longer has: every ``detecture`` import they make must
resolve."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[1] / "perf"


def _detecture_imports(script: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each ``from detecture... import name`` / ``import detecture...`` of ``script``."""
    found = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("detecture"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("detecture")]
    return found


@pytest.mark.parametrize("script", sorted(PERF.glob("*.py")), ids=lambda p: p.name)
def test_every_detecture_import_of_a_perf_script_resolves(script):
    for module, name in _detecture_imports(script):
        imported = importlib.import_module(module)
        if name is not None and not hasattr(imported, name):
            importlib.import_module(f"{module}.{name}")  # a submodule: ModuleNotFoundError names it
