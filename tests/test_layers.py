"""The house's layering, read from the source with ``ast``: imports run one way, and no module imports itself back.

Every import counts, including the deferred ones inside functions (they keep ``import detecture`` cheap, but they
are dependencies all the same). docs/ARCHITECTURE.md explains the layers.
"""

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "detecture"

# Highest first. A module may import its own layer or any layer below it, never one above.
LAYERS: list[tuple[str, set[str]]] = [
    ("entry points", {"detecture", "__main__", "cli", "commands", "api", "demo"}),
    ("service", {"service"}),
    ("training", {"training"}),
    ("evaluation and mining", {"benchmark", "miner"}),
    ("core", {"pipeline", "result", "output", "prompts", "prompt_sets", "bridge", "backbones", "classical",
              "reencode", "images", "visualize", "data"}),
    ("helpers", {"utils", "errors"}),
]
# Rooms that share a layer but must not lean on each other.
INDEPENDENT = {"benchmark", "miner"}


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package_root: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from . import x`` names module x, not the package)."""
    name = _module_name(path, package_root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            candidates = [[f"{base}.{alias.name}", base] for alias in node.names]
        else:
            continue
        for options in candidates:
            for target in options:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules:
                    if target != name:
                        found.add(target)
                    break
    return found


@lru_cache
def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = sorted(package.rglob("*.py"))
    modules = {_module_name(p, package) for p in paths}
    return {_module_name(p, package): _imports(p, package, modules) for p in paths}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "detecture"


def _layer(module: str) -> int:
    room = _room(module)
    for rank, (_, rooms) in enumerate(LAYERS):
        if room in rooms:
            return rank
    raise AssertionError(f"{module}: room {room!r} is in no layer; add it to LAYERS and docs/ARCHITECTURE.md")


def test_every_room_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_import_points_up_a_layer():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if _layer(target) < _layer(module):
                upward.append(f"{module} ({LAYERS[_layer(module)][0]}) -> {target} ({LAYERS[_layer(target)][0]})")
            elif _room(module) in INDEPENDENT and _room(target) in INDEPENDENT and _room(module) != _room(target):
                upward.append(f"{module} -> {target} (independent rooms)")
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_violation(tmp_path):
    """The graph reader resolves relative imports: a core module importing the CLI would be caught."""
    fake = tmp_path / "detecture"
    (fake / "commands").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "commands" / "__init__.py").write_text("")
    (fake / "commands" / "segment.py").write_text("from .. import result\n")
    (fake / "result.py").write_text("def f():\n    from .commands import segment\n")
    graph = _graph(fake)
    assert graph["detecture.result"] == {"detecture.commands.segment"}
    assert graph["detecture.commands.segment"] == {"detecture.result"}
