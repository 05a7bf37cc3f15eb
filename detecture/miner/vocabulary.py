"""Which dataset classes are textures, objects or ambiguous (a versioned YAML such as the packaged
``detecture/miner/ade20k_classes.yaml``).

The kinds are held as boolean lookup tables indexed by class id, so scoring a label map is a couple of
``np.bincount`` calls and table look-ups rather than per-class Python loops.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..utils.yaml_files import read_yaml

KINDS = ("texture", "object", "ambiguous")


@dataclass(frozen=True)
class Vocabulary:
    """Class names and kinds for ids ``0..n_classes-1``; id 0 is "unlabelled" and belongs to no kind."""

    version: int
    names: tuple[str, ...]  # names[0] == "unlabelled"
    is_texture: np.ndarray  # (n_classes,) bool
    is_object: np.ndarray
    is_ambiguous: np.ndarray
    digest: str

    @property
    def n_classes(self) -> int:
        return len(self.names)

    def with_names(self, names: dict[int, str]) -> "Vocabulary":
        """The same kinds with display names taken from the dataset itself (e.g. its ``objectInfo150``)."""
        merged = list(self.names)
        for idx, name in names.items():
            if 0 < idx < len(merged):
                merged[idx] = name
        return Vocabulary(self.version, tuple(merged), self.is_texture, self.is_object, self.is_ambiguous, self.digest)


def load_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """Read a class vocabulary YAML; ids must be exactly ``1..N`` and every class needs a known kind."""
    path = Path(path)
    data, raw = read_yaml(path, "class vocabulary")
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or "version" not in data:
        raise InputError(f"{path}: expected a mapping with 'version' and a 'classes' list of {{id, name, kind}}")
    entries = data["classes"]
    n = len(entries) + 1
    names = ["unlabelled"] * n
    tables = {kind: np.zeros(n, dtype=bool) for kind in KINDS}
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"id", "name", "kind"}:
            raise InputError(f"{path}: classes[{i}] must be {{id, name, kind}}, got {entry!r}")
        idx, name, kind = entry["id"], entry["name"], entry["kind"]
        if not isinstance(idx, int) or not 1 <= idx < n or idx in seen:
            raise InputError(f"{path}: classes[{i}] has id {idx!r}; ids must be 1..{n - 1}, each once")
        if kind not in KINDS:
            raise InputError(f"{path}: class {idx} ({name}) has kind {kind!r}; expected one of {list(KINDS)}")
        seen.add(idx)
        names[idx] = str(name)
        tables[kind][idx] = True
    return Vocabulary(
        version=int(data["version"]),
        names=tuple(names),
        is_texture=tables["texture"],
        is_object=tables["object"],
        is_ambiguous=tables["ambiguous"],
        digest=hashlib.sha256(raw).hexdigest(),
    )
