"""Source adapters: every dataset the miner reads is a :class:`SceneSource` yielding :class:`Scene` objects.

A scene is one image with its class-index label map, plus optional *variants* (the same scene re-rendered, e.g.
the Textured-ADE20K degrees) that share the label map. Supporting a new dataset (COCO-panoptic, ...) means writing
one subclass with :meth:`SceneSource.scenes` (and :meth:`SceneSource.read_label` if its labels are not single-channel
class-index PNGs) and registering it in :data:`SOURCES`.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.layouts import IMAGE_SUFFIXES
from ..errors import DatasetError

log = logging.getLogger(__name__)

ORIGINAL = "original"


@dataclass(frozen=True)
class Variant:
    degree: str
    image: Path


@dataclass(frozen=True)
class Scene:
    id: str
    image: Path
    label: Path
    variants: tuple[Variant, ...] = ()


def _index_images(folder: Path) -> dict[str, Path]:
    """``stem -> path`` for the image files directly inside ``folder`` (one directory listing, no per-file stat)."""
    out: dict[str, Path] = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."):
                out.setdefault(stem, Path(entry.path))
    return out


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel class-index PNG (mode L, P or 16-bit) as an integer array; errors name the file."""
    if not path.is_file():
        raise DatasetError(f"{path}: label map not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise DatasetError(f"{path}: label map has mode {im.mode}; expected a single-channel class-index PNG")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable label map ({exc})") from None


class SceneSource(ABC):
    """The interface the miner needs from a dataset; constructors take ``(root, subset)``."""

    name: ClassVar[str]
    vocabulary_file: ClassVar[str] = "ade20k_classes.yaml"  # under configs/, unless --vocabulary overrides it

    @abstractmethod
    def scenes(self) -> list[Scene]:
        """All scenes, sorted by id (ids must be unique and usable as file names)."""

    def class_names(self) -> dict[int, str]:
        """Class names shipped with the dataset (id -> name); empty means "use the vocabulary's names"."""
        return {}

    def read_label(self, scene: Scene) -> np.ndarray:
        return read_label_png(scene.label)

    def describe(self) -> dict[str, object]:
        """What makes this source's scenes what they are (recorded so a resumed run can check it is the same)."""
        return {"source": self.name}


class ADE20KSource(SceneSource):
    """ADE20K in the ``ADEChallengeData2016`` layout::

        <root>/images/<subset>/ADE_train_00000001.jpg
        <root>/annotations/<subset>/ADE_train_00000001.png   class-index PNG: 0 = unlabelled, 1..150
        <root>/objectInfo150.csv or objectInfo150.txt        optional class names (else the vocabulary's)

    ``subset`` is ``training`` or ``validation``; ``root`` may also be the folder that contains
    ``ADEChallengeData2016/``. An image without an annotation is still listed; the miner rejects it on reading.
    """

    name = "ade20k"
    EXPECTED = "<root>/images/<subset>/*.jpg with <root>/annotations/<subset>/*.png (ADEChallengeData2016 layout)"

    def __init__(self, root: str | os.PathLike, subset: str = "training") -> None:
        root = Path(root)
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        self.root, self.subset = root, subset
        self.image_dir = root / "images" / subset
        self.label_dir = root / "annotations" / subset
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise DatasetError(f"{root}: no folder {folder.relative_to(root)}; expected {self.EXPECTED}")

    def scenes(self) -> list[Scene]:
        images = _index_images(self.image_dir)
        if not images:
            raise DatasetError(f"{self.image_dir}: no images found; expected {self.EXPECTED}")
        return [Scene(stem, images[stem], self.label_dir / f"{stem}.png") for stem in sorted(images)]

    def class_names(self) -> dict[int, str]:
        for fname in ("objectInfo150.csv", "objectInfo150.txt"):
            path = self.root / fname
            if path.is_file():
                return parse_object_info(path)
        return {}

    def describe(self) -> dict[str, object]:
        return {"source": self.name, "subset": self.subset}


def parse_object_info(path: Path) -> dict[int, str]:
    """Read ADE20K's ``objectInfo150`` (CSV ``Idx,Ratio,Train,Val,Name`` or the tab-separated ``.txt``).

    Names list synonyms (``building;edifice`` or ``building, edifice``); the first one is the display name.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    delimiter = "\t" if path.suffix == ".txt" else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows or [c.strip().lower() for c in rows[0]][:1] != ["idx"] or "name" not in rows[0][-1].lower():
        raise DatasetError(f"{path}: expected a header 'Idx ... Name' (ADE20K objectInfo150 format)")
    names: dict[int, str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            idx = int(row[0])
        except ValueError:
            raise DatasetError(f"{path}: line {line_no}: class index {row[0]!r} is not an integer") from None
        names[idx] = re.split(r"[;,]", row[-1])[0].strip()
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DatasetError(f"{path}: class indices must run 1..N without gaps")
    return names


class FolderSource(SceneSource):
    """A plain folder of image + label-map pairs matched by file stem::

        <root>/images/<name>.<jpg|png|...>
        <root>/labels/<name>.png     class-index PNG in the vocabulary's ids (default: ADE20K's 150 classes)
    """

    name = "folder"
    EXPECTED = "<root>/images/<name>.jpg with <root>/labels/<name>.png"

    def __init__(self, root: str | os.PathLike, subset: str = "") -> None:
        """``subset`` is accepted for a uniform constructor and ignored: a plain folder has no subsets."""
        self.root = Path(root)
        for sub in ("images", "labels"):
            if not (self.root / sub).is_dir():
                raise DatasetError(f"{self.root}: no folder {sub}/; expected {self.EXPECTED}")

    def scenes(self) -> list[Scene]:
        images = _index_images(self.root / "images")
        if not images:
            raise DatasetError(f"{self.root / 'images'}: no images found; expected {self.EXPECTED}")
        return [Scene(stem, images[stem], self.root / "labels" / f"{stem}.png") for stem in sorted(images)]


DEGREE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class TexturedVariants(SceneSource):
    """TextureSAM's Textured-ADE20K: the base source's scenes re-textured at several strengths (eta, "degrees").

    Layout (one sibling image set per degree; annotations are the base dataset's)::

        <textured_root>/<degree>/images/<subset>/<same file stem as the base image>.<jpg|png>
        <textured_root>/<degree>/images/<same file stem>.<jpg|png>          (flat, also accepted)

    Any sub-folder of ``textured_root`` that has an ``images/`` folder is a degree, whatever its name
    (``eta_0.3``, ``degree_1``, ``0.5`` ...); degrees are ordered by name. Each base scene gains one variant per
    degree that has an image with its stem; a degree missing an image is simply not a variant of that scene.
    """

    EXPECTED = "<textured_root>/<degree>/images/[<subset>/]<image stem>.jpg, e.g. eta_0.3/images/training/x.jpg"

    def __init__(self, base: SceneSource, textured_root: str | os.PathLike, subset: str = "training") -> None:
        self.base, self.root = base, Path(textured_root)
        self.name = f"textured-{base.name}"  # type: ignore[misc]
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: Textured-ADE20K root not found; expected {self.EXPECTED}")
        degrees = sorted(p for p in self.root.iterdir() if (p / "images").is_dir())
        if not degrees:
            raise DatasetError(f"{self.root}: no degree folders (sub-folders with images/); expected {self.EXPECTED}")
        self.degree_dirs: dict[str, Path] = {}
        for d in degrees:
            if not DEGREE_NAME.match(d.name):
                raise DatasetError(f"{d}: degree folder names may use only letters, digits, '.', '_' and '-'")
            nested = d / "images" / subset
            self.degree_dirs[d.name] = nested if subset and nested.is_dir() else d / "images"
        if ORIGINAL in self.degree_dirs:
            raise DatasetError(f"{self.root}: a degree may not be called '{ORIGINAL}' (reserved for the base images)")
        self.vocabulary_file = base.vocabulary_file  # type: ignore[misc]

    def scenes(self) -> list[Scene]:
        indexes = {name: _index_images(folder) for name, folder in self.degree_dirs.items()}
        out = []
        for scene in self.base.scenes():
            found = [Variant(name, idx[scene.id]) for name, idx in indexes.items() if scene.id in idx]
            out.append(replace(scene, variants=tuple(found)))
        if not any(s.variants for s in out):
            log.warning("%s: no degree image matches any base image name", self.root)
        return out

    def class_names(self) -> dict[int, str]:
        return self.base.class_names()

    def read_label(self, scene: Scene) -> np.ndarray:
        return self.base.read_label(scene)

    def describe(self) -> dict[str, object]:
        return {**self.base.describe(), "degrees": sorted(self.degree_dirs)}


SOURCES: dict[str, type[SceneSource]] = {cls.name: cls for cls in (ADE20KSource, FolderSource)}


def open_source(name: str, root: str | os.PathLike, subset: str = "training",
                textured_root: str | os.PathLike | None = None) -> SceneSource:
    """Build the named source, wrapped with Textured-ADE20K degrees when ``textured_root`` is given."""
    if name not in SOURCES:
        raise DatasetError(f"unknown source {name!r}; available: {sorted(SOURCES)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found")
    source = SOURCES[name](root, subset)
    return TexturedVariants(source, textured_root, subset) if textured_root else source
