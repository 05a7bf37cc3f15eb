"""TextureSAM's Textured-ADE20K: the base source's scenes re-textured at several strengths (eta, "degrees").

Two folder layouts are read, detected per ``--textured-root`` folder:

* **flat**, as TextureSAM releases it (``ADE20K_0.3``, and ``ADE20K_textured_images`` once flattened)::

      <folder>/ADE_train_00000037_textured_degree0_3.jpg    variant of ADE20K scene ADE_train_00000037, eta 0.3
      <folder>/ADE_train_00000037_textured_degree1.0.jpg    the decimal spelling is read as well (eta 1.0)
      <folder>/ADE_train_00000037_textured_degree0_3.json   SAM-format annotation: ignored (labels come from --root)
      <folder>/ADE_train_00000037.jpg                       copy of the scene image: ignored, or the scene's
                                                            original image if --root lacks it

  A mapping JSON ``{file name: {"base_ade20k_id": ..., "degree": ...}}`` (as the published miner writes for its
  flattened copy) names the scene and strength of files whose names do not say it.

* **nested**, one folder per degree: ``<folder>/<degree>/images/[<subset>/]<scene id>.jpg``; the degree is the
  folder name (``eta_0.3``, ``degree_1``), its strength the number that ends the name.

Every variant shares its scene's label map, so a scene is scored once whatever its number of variants. Indexing is
one directory listing per folder (no per-file stat): the all-strengths set is ~222k files for ~20k scenes. Files
that cannot be used are listed with the reason (``SourceIndex.rejected``), never dropped silently; when several
folders hold the same (scene, degree), the first folder given wins and the others are listed as duplicates. A folder
that mixes the two layouts (a stray copy with ``images/`` beside flat files) is refused, naming it.
"""

from __future__ import annotations

import gc
import hashlib
import math
import os
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from ..data.layouts import IMAGE_SUFFIXES
from ..errors import DatasetError, InputError
from ..utils.json_files import read_json
from ..utils.paths import printable, resolved
from .sources import (DUPLICATE, NOT_UTF8, ORIGINAL, SOURCES, UNDECODABLE, Scene, SceneSource, SourceIndex, Variant,
                      is_utf8_name, rejected_file)

TEXTURED_NAME = re.compile(r"^(?P<scene>.+?)_textured_degree(?P<spec>.*)$")
STRENGTH = re.compile(r"^\d+(?:[._]\d+)?$")
TRAILING_STRENGTH = re.compile(r"(\d+(?:[._]\d+)?)$")
DEGREE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# kinds of rejected files (the "kind" field of rejected.jsonl records and the keys of the summary counts)
NO_SCENE, NO_ANNOTATION, UNPARSABLE, UNSUPPORTED = "no_scene", "no_annotation", "unparsable_name", "unsupported_file"

EXPECTED = ("a flat folder of <scene>_textured_degree<strength>.jpg files (TextureSAM's ADE20K_0.3) or "
            "<folder>/<degree>/images/[<subset>/]<scene>.jpg")
MAPPING_FORMAT = '{"<file name>": {"base_ade20k_id": "<scene>", "degree": <strength>}, ...}'


def parse_strength(spec: str) -> float | None:
    """``0_3`` / ``0.3`` -> 0.3, ``1`` / ``1.0`` -> 1.0; None if ``spec`` is not such a number."""
    return float(spec.replace("_", ".", 1)) if STRENGTH.match(spec) else None


def degree_label(strength: float) -> str:
    """The canonical degree of a flat-layout variant (``0.3``, ``1.0``): both spellings give the same label."""
    return repr(float(strength))


def parse_degrees(text: str) -> tuple[float, ...]:
    """``--degrees 0.1,0.3,1.0`` -> sorted unique strengths; an InputError names the bad item. An empty list is
    refused: it selects nothing, and reading it as "all" would quietly mine what the user meant to narrow down."""
    if not text.strip():
        raise InputError("--degrees: empty list; give strengths like 0.1,0.3,1.0, or leave the option out to use all")
    out = set()
    for item in text.split(","):
        value = parse_strength(item.strip())
        if value is None:
            raise InputError(f"--degrees: {item.strip()!r} is not a strength like 0.3 or 1.0 (comma-separated list)")
        out.add(value)
    return tuple(sorted(out))


def load_mapping(path: str | os.PathLike) -> dict[str, tuple[str, float]]:
    """Read the flat-file mapping JSON: file name -> (scene id, strength)."""
    path = Path(path)
    try:
        data = read_json(path, "mapping file", InputError)
    except FileNotFoundError:
        raise InputError(f"{path}: mapping file not found") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {MAPPING_FORMAT}")
    out = {}
    for name, info in data.items():
        scene = info.get("base_ade20k_id") if isinstance(info, dict) else None
        degree = info.get("degree") if isinstance(info, dict) else None
        if isinstance(degree, str):
            degree = parse_strength(degree)
        if (not isinstance(scene, str) or not scene or isinstance(degree, bool)
                or not isinstance(degree, (int, float)) or not math.isfinite(degree) or degree < 0):
            raise InputError(f"{path}: entry {name!r} needs a base_ade20k_id string and a degree number "
                             f">= 0; expected {MAPPING_FORMAT}")
        out[name] = (scene, float(degree))
    return out


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a million small objects are built for a 222k-file index.

    None of them is garbage, yet each allocation burst triggers collections that rescan all of them: about a third
    of the indexing time. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Found(NamedTuple):
    """One image file of a textured folder: a variant (``degree`` set) or a plain copy of the scene image."""

    scene: str
    path: str  # a Path only once used: building 222k Path objects would be most of the indexing time
    degree: str | None = None
    strength: float | None = None


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


class TexturedVariants(SceneSource):
    """The base source's scenes, each with its Textured-ADE20K variants from one or more folders (module doc)."""

    def __init__(self, base: SceneSource, roots: Sequence[str | os.PathLike], subset: str = "training",
                 degrees: Sequence[float] | None = None, mapping: str | os.PathLike | None = None) -> None:
        self.base, self.roots, self.subset = base, [Path(r) for r in roots], subset
        self.name = f"textured-{base.name}"  # type: ignore[misc]
        self.vocabulary_file = base.vocabulary_file  # type: ignore[misc]
        for root in self.roots:
            if not root.is_dir():
                raise DatasetError(f"{root}: Textured-ADE20K folder not found; expected {EXPECTED}")
        self.degrees = None if degrees is None else tuple(sorted(set(map(float, degrees))))
        self.mapping_path = Path(mapping) if mapping is not None else None
        self.mapping = load_mapping(self.mapping_path) if self.mapping_path else {}

    def scenes(self) -> list[Scene]:
        return self.index().scenes

    def class_names(self) -> dict[int, str]:
        return self.base.class_names()

    def read_label(self, scene: Scene) -> np.ndarray:
        return self.base.read_label(scene)

    def __getstate__(self) -> dict[str, Any]:
        """Workers only read labels: a 222k-entry mapping need not be copied into every process."""
        return {**self.__dict__, "mapping": {}}

    def label_path(self, scene_id: str) -> Path:
        return self.base.label_path(scene_id)

    def label_ids(self) -> set[str]:
        return self.base.label_ids()

    def describe(self) -> dict[str, object]:
        mapping = hashlib.sha256(self.mapping_path.read_bytes()).hexdigest() if self.mapping_path else None
        roots = [printable(resolved(r)) for r in self.roots]  # in the order given: the first wins on duplicates
        degrees = list(self.degrees) if self.degrees else "all"
        return {**self.base.describe(), "textured_roots": roots, "degrees": degrees, "mapping_sha256": mapping}

    # -- indexing ----------------------------------------------------------------------------------------------

    def index(self) -> SourceIndex:
        with _gc_paused():
            return self._index()

    def _index(self) -> SourceIndex:
        base = self.base.index()
        by_id = {s.id: s for s in base.scenes}
        counts: Counter[str] = Counter()
        rejected = list(base.rejected)
        found = [f for root in self.roots for f in self._list_folder(root, counts, rejected)]
        base_image, variants = self._resolve(found, by_id, counts, rejected)
        scenes = []
        for sid in sorted(by_id.keys() | base_image.keys() | variants.keys()):
            own = tuple(v for _, v in sorted(variants.get(sid, {}).items()))
            if sid in by_id:
                scenes.append(replace(by_id[sid], variants=own))
            else:
                scenes.append(Scene(sid, base_image.get(sid), self.base.label_path(sid), own))
        by_degree = Counter(v.degree for s in scenes for v in s.variants)
        summary = {
            "files": counts.pop("files", 0),
            "variants": sum(by_degree.values()),
            "variants_by_degree": dict(sorted(by_degree.items())),
            "scenes_with_variants": sum(1 for s in scenes if s.variants),
            "base_images_from_textured": counts.pop("base_images_from_textured", 0),
            "not_selected": counts.pop("not_selected", 0),
            "ignored": dict(sorted(counts.items())),
            "rejected": dict(sorted(Counter(r["kind"] for r in rejected).items())),
        }
        if self.mapping:
            listed = {os.path.basename(f.path) for f in found}
            summary["mapping_entries_without_file"] = sum(1 for name in self.mapping if name not in listed)
        return SourceIndex(scenes, sorted(rejected, key=lambda r: (r["id"], r["path"])), summary)

    def _resolve(self, found: list[_Found], by_id: dict[str, Scene], counts: Counter[str], rejected: list
                 ) -> tuple[dict[str, Path], dict[str, dict[str, Variant]]]:
        """Match the files found to scenes: (base images taken from textured copies, scene -> degree -> variant)."""
        known = by_id.keys() | self.base.label_ids()
        copies = {f.scene for f in found if f.degree is None}
        with_variants = {f.scene for f in found if f.degree is not None}
        base_image: dict[str, Path] = {}
        variants: dict[str, dict[str, Variant]] = {}
        first_path: dict[tuple[str, str], str] = {}
        strengths: set[float] = set()
        for f in found:
            if f.scene not in known:
                if f.degree is None and f.scene not in with_variants:
                    rejected.append(rejected_file(UNPARSABLE, f.path, "name is neither <scene>_textured_degree"
                                                                      "<strength> nor an image of a --root scene"))
                elif f.scene in copies:
                    rejected.append(rejected_file(NO_ANNOTATION, f.path, f"scene {f.scene} has an image but no "
                                                                         f"annotation {self.base.label_path(f.scene)}"))
                else:
                    rejected.append(rejected_file(NO_SCENE, f.path, f"matches no scene of --root (no image or "
                                                                    f"annotation named {f.scene})"))
                continue
            if f.strength is not None:
                strengths.add(f.strength)
            if f.degree is None:
                if f.scene in by_id or f.scene in base_image:
                    counts["base_copies"] += 1
                else:
                    base_image[f.scene] = Path(f.path)
                    counts["base_images_from_textured"] += 1
            elif self.degrees is not None and f.strength not in self.degrees:
                counts["not_selected"] += 1
            elif (key := (f.scene, f.degree)) in first_path:
                rejected.append(rejected_file(DUPLICATE, f.path, f"duplicate of {first_path[key]} (scene "
                                                                 f"{f.scene}, degree {f.degree}); the first "
                                                                 "--textured-root wins"))
            else:
                first_path[key] = f.path
                variants.setdefault(f.scene, {})[f.degree] = Variant(f.degree, Path(f.path))
        self._check_selection(strengths)
        return base_image, variants

    def _check_selection(self, strengths: set[float]) -> None:
        missing = [d for d in self.degrees or () if d not in strengths]
        if missing:
            have = ", ".join(degree_label(s) for s in sorted(strengths)) or "none"
            wanted = ", ".join(map(degree_label, missing))
            raise InputError(f"--degrees: no usable textured image has strength {wanted} in "
                             f"{', '.join(map(str, self.roots))} (strengths found: {have})")

    def _list_folder(self, root: Path, counts: Counter[str], rejected: list) -> Iterator[_Found]:
        """One listing of ``root``: a nested layout if any sub-folder has ``images/``, else a flat folder. A folder
        holding both is refused: read as either layout, the other's images would be left out unlisted."""
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
        degree_dirs = [e for e in entries if e.is_dir() and os.path.isdir(os.path.join(e.path, "images"))]
        flat_images = [e for e in entries if not e.is_dir() and _is_image(e.name) and not e.name.startswith(".")]
        if degree_dirs and flat_images:
            raise DatasetError(
                f"{root}: holds both degree folders with images/ ({', '.join(e.name for e in degree_dirs[:3])}"
                f"{', ...' if len(degree_dirs) > 3 else ''}) and {len(flat_images)} image(s) of a flat folder (e.g. "
                f"{flat_images[0].name}); expected one layout: move the degree folders, or the flat images, into a "
                "folder of their own (another --textured-root) or out of it")
        if degree_dirs:
            yield from self._nested(degree_dirs, counts, rejected)
            return
        if not any(_is_image(e.name) for e in entries if not e.is_dir()):
            raise DatasetError(f"{root}: no degree folders (sub-folders with images/) and no images; "
                               f"expected {EXPECTED}")
        for entry in entries:
            counts["files"] += 1
            found = self._flat_entry(entry, counts, rejected)
            if found is not None:
                yield found

    def _flat_entry(self, entry: os.DirEntry, counts: Counter[str], rejected: list) -> _Found | None:
        name, path = entry.name, entry.path
        stem, ext = os.path.splitext(name)
        if name.startswith("."):
            counts["hidden"] += 1
        elif not is_utf8_name(name):
            rejected.append(rejected_file(UNDECODABLE, path, NOT_UTF8))
        elif entry.is_dir():
            rejected.append(rejected_file(UNSUPPORTED, path, "a folder inside a flat Textured-ADE20K folder"))
        elif ext.lower() == ".json" and name not in self.mapping:
            counts["json"] += 1
        elif ext.lower() not in IMAGE_SUFFIXES:
            rejected.append(rejected_file(UNSUPPORTED, path, "not an image"))
        elif name in self.mapping:
            scene, strength = self.mapping[name]
            return _Found(scene, path, degree_label(strength), strength)
        elif match := TEXTURED_NAME.match(stem):
            strength = parse_strength(match["spec"])
            if strength is None:
                rejected.append(rejected_file(UNPARSABLE, path, f"cannot read the strength {match['spec']!r}; "
                                                                "expected e.g. _textured_degree0_3 or "
                                                                "_textured_degree1.0"))
                return None
            return _Found(match["scene"], path, degree_label(strength), strength)
        else:
            return _Found(stem, path)
        return None

    def _nested(self, degree_dirs: list[os.DirEntry], counts: Counter[str], rejected: list) -> Iterator[_Found]:
        for d in degree_dirs:
            if not DEGREE_NAME.match(d.name) or d.name == ORIGINAL:
                raise DatasetError(f"{d.path}: degree folder names may use only letters, digits, '.', '_' and '-' "
                                   f"and may not be '{ORIGINAL}' (reserved for the base images)")
            match = TRAILING_STRENGTH.search(d.name)
            strength = parse_strength(match.group(1)) if match else None
            if self.degrees is not None and strength is None:
                raise DatasetError(f"{d.path}: --degrees needs a strength at the end of each degree folder's "
                                   f"name (e.g. eta_0.3); this one has none")
            images = Path(d.path) / "images"
            folder = images / self.subset if self.subset and (images / self.subset).is_dir() else images
            with os.scandir(folder) as it:
                for entry in sorted(it, key=lambda e: e.name):
                    counts["files"] += 1
                    if entry.name.startswith("."):
                        counts["hidden"] += 1
                    elif not is_utf8_name(entry.name):
                        rejected.append(rejected_file(UNDECODABLE, entry.path, NOT_UTF8))
                    elif _is_image(entry.name):
                        yield _Found(os.path.splitext(entry.name)[0], entry.path, d.name, strength)
                    else:
                        rejected.append(rejected_file(UNSUPPORTED, entry.path, "not an image"))


def open_source(name: str, root: str | os.PathLike, subset: str = "training",
                textured_roots: Sequence[str | os.PathLike] = (), degrees: Sequence[float] | None = None,
                mapping: str | os.PathLike | None = None) -> SceneSource:
    """Build the named source, wrapped with Textured-ADE20K variants when ``textured_roots`` are given.

    ``degrees`` selects texture strengths and ``mapping`` is the optional flat-file mapping JSON; both only make
    sense with textured roots (see :class:`TexturedVariants`).
    """
    if name not in SOURCES:
        raise DatasetError(f"unknown source {name!r}; available: {sorted(SOURCES)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    source = SOURCES[name](root, subset)
    if not textured_roots:
        if degrees is not None or mapping is not None:
            raise InputError("--degrees and --textured-mapping need --textured-root")
        return source
    return TexturedVariants(source, textured_roots, subset, degrees=degrees, mapping=mapping)
