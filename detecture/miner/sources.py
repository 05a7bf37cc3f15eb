"""Source adapters: every dataset the miner reads is a :class:`SceneSource` yielding :class:`Scene` objects.

A scene is one image with its class-index label map, plus optional *variants* (the same scene re-rendered, e.g.
the Textured-ADE20K degrees added by :mod:`.textured`) that share the label map. Supporting a new dataset
(COCO-panoptic, ...) means writing one subclass with :meth:`SceneSource.scenes` (and :meth:`SceneSource.read_label`
if its labels are not single-channel class-index PNGs) and registering it in :data:`SOURCES`.
"""

from __future__ import annotations

import csv
import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from ..data.layouts import IMAGE_SUFFIXES
from ..errors import DatasetError, InputError
from ..images import open_image
from ..utils.paths import printable, resolved

ORIGINAL = "original"
UNDECODABLE = "undecodable_name"  # the "kind" of a rejected file whose name is not UTF-8
DUPLICATE = "duplicate"  # the "kind" of a rejected file whose scene and degree another file already gives
ID_CLASH = "id_clash"  # the "kind" of a rejected scene named like another scene's variant (see without_id_clashes)
NOT_UTF8 = "file name is not valid UTF-8; rename the file to mine it"


@dataclass(frozen=True)
class Variant:
    degree: str
    image: Path


@dataclass(frozen=True)
class Scene:
    """``image`` is None when only re-rendered variants of the scene exist (no original image anywhere)."""

    id: str
    image: Path | None
    label: Path
    variants: tuple[Variant, ...] = ()


@dataclass(frozen=True)
class SourceIndex:
    """What indexing a source found: the scenes, plus files it could not use and counts for ``summary.json``.

    ``rejected`` holds ``{"id", "path", "reason", "kind"}`` records (written to ``rejected.jsonl`` with the
    per-scene rejections), so a file that is not mined is always listed with the reason.
    """

    scenes: list[Scene]
    rejected: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def sample_id_of(scene_id: str, degree: str) -> str:
    """The id of one image of a scene: the scene's own for its original, ``<scene>__<degree>`` for a variant."""
    return scene_id if degree == ORIGINAL else f"{scene_id}__{degree}"


def candidates(scene: Scene) -> list[tuple[str, str, Path]]:
    """``(sample id, degree, image)`` of every image of the scene: its original (if any), then its variants."""
    found = [(scene.id, ORIGINAL, scene.image)] if scene.image is not None else []
    return found + [(sample_id_of(scene.id, v.degree), v.degree, v.image) for v in scene.variants]


def candidate_ids(scene: Scene) -> list[str]:
    """The sample ids of a scene's images, in order: what a scene's result file records it was made for, and what
    two scenes must not share."""
    return [sample_id for sample_id, _, _ in candidates(scene)]


def without_id_clashes(index: SourceIndex) -> SourceIndex:
    """The index without scenes that would share a sample id with an earlier one: a scene named ``X__0.3`` beside
    scene ``X`` and its variant at strength 0.3 would write the same image file. The later scene by id (the longer
    name) is listed as rejected, naming the other, and not mined."""
    owners: dict[str, str] = {}
    kept, rejected = [], []
    for scene in index.scenes:
        ids = candidate_ids(scene)
        clash = next((i for i in ids if i in owners), None)
        if clash is None:
            owners.update(dict.fromkeys(ids, scene.id))
            kept.append(scene)
            continue
        path = scene.image if scene.image is not None else scene.variants[0].image
        rejected.append(rejected_file(ID_CLASH, str(path), f"scene {scene.id} would write sample {clash}, which is "
                                                         f"an image of scene {owners[clash]}; rename the file to "
                                                         "mine it"))
    if not rejected:
        return index
    return SourceIndex(kept, [*index.rejected, *rejected], {**index.counts, "id_clashes": len(rejected)})


def is_utf8_name(name: str) -> bool:
    """Whether a listed file name is valid UTF-8. Scene and sample ids come from file names and are written to the
    JSON outputs, which are UTF-8: any other name is rejected when listed, before any of its files are written."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rejected_file(kind: str, path: str, reason: str) -> dict[str, str]:
    """A ``rejected.jsonl`` record for a listed file that is not mined (see :class:`SourceIndex`); the reason goes
    through :func:`printable` too, since it may name other files (a duplicate's original, a missing label map)."""
    shown = printable(path)
    return {"id": os.path.splitext(os.path.basename(shown))[0], "path": shown,
            "reason": f"{shown}: {printable(reason)}", "kind": kind}


def _index_images(folder: Path) -> tuple[dict[str, Path], list[dict[str, str]]]:
    """``stem -> path`` for the image files directly inside ``folder`` (one directory listing, no per-file stat), and
    the rejections of those whose name cannot be an id. Of two images with one stem (``A.jpg``, ``A.png``) the first
    by name is the scene's and the other is listed as a duplicate: the listing's order is the file system's, so
    taking whichever came first would mine a different file on another machine."""
    out: dict[str, Path] = {}
    rejected = []
    with os.scandir(folder) as it:
        entries = sorted((e.name, e.path) for e in it)
    for name, path in entries:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_SUFFIXES or name.startswith("."):
            continue
        if not is_utf8_name(name):
            rejected.append(rejected_file(UNDECODABLE, path, NOT_UTF8))
        elif stem in out:
            rejected.append(rejected_file(DUPLICATE, path, f"another image of scene {stem}, {out[stem].name}, is "
                                                           "mined (the first by file name)"))
        else:
            out[stem] = Path(path)
    return out, rejected


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel class-index PNG (mode L, P or 16-bit) as an integer array; data errors name the file,
    and a failing system raises its ``OSError`` (:func:`detecture.images.open_image` decides which is which)."""
    try:
        with open_image(path, "label map") as im:
            if im.format != "PNG":  # another format under a .png name can hold ids up to 2**31 (TIFF) or be lossy
                raise DatasetError(f"{path}: label map is a {im.format} file; expected a single-channel class-index "
                                   "PNG")
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise DatasetError(f"{path}: label map has mode {im.mode}; expected a single-channel class-index PNG")
            im.load()
            return np.asarray(im)
    except InputError as exc:
        raise DatasetError(str(exc)) from None


def _paired_index(image_dir: Path, label_path: Callable[[str], Path], expected: str) -> SourceIndex:
    """The scenes of a folder of images whose label maps are named after them, sorted by id."""
    images, rejected = _index_images(image_dir)
    if not images:
        raise DatasetError(f"{image_dir}: no images found; expected {expected}")
    counts = {"rejected": dict(Counter(r["kind"] for r in rejected))} if rejected else {}
    return SourceIndex([Scene(stem, images[stem], label_path(stem)) for stem in sorted(images)], rejected, counts)


class SceneSource(ABC):
    """The interface the miner needs from a dataset; constructors take ``(root, subset)``."""

    name: ClassVar[str]
    vocabulary_file: ClassVar[str] = "ade20k_classes.yaml"  # shipped in detecture/miner/, unless --vocabulary overrides it
    root: Path  # the dataset folder
    label_dir: Path  # where ``<scene id>.png`` label maps live (sources with other label files override label_*)

    @abstractmethod
    def scenes(self) -> list[Scene]:
        """All scenes, sorted by id (ids must be unique and usable as file names)."""

    def index(self) -> SourceIndex:
        """The scenes with anything found but not usable; a plain source has nothing of the latter."""
        return SourceIndex(self.scenes())

    def label_path(self, scene_id: str) -> Path:
        return self.label_dir / f"{scene_id}.png"

    def label_ids(self) -> set[str]:
        """Ids of all scenes that have a label map (one directory listing, no per-file stat)."""
        with os.scandir(self.label_dir) as it:
            return {e.name[:-4] for e in it
                    if e.name.endswith(".png") and not e.name.startswith(".") and is_utf8_name(e.name)}

    def class_names(self) -> dict[int, str]:
        """Class names shipped with the dataset (id -> name); empty means "use the vocabulary's names"."""
        return {}

    def read_label(self, scene: Scene) -> np.ndarray:
        return read_label_png(scene.label)

    def describe(self) -> dict[str, object]:
        """What makes this source's scenes what they are (recorded so a resumed run can check it is the same): its
        kind and its folder, resolved, since mining another dataset into the same output would mix the two."""
        return {"source": self.name, "root": printable(resolved(self.root))}


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
        return self.index().scenes

    def index(self) -> SourceIndex:
        return _paired_index(self.image_dir, self.label_path, self.EXPECTED)

    def class_names(self) -> dict[int, str]:
        for fname in ("objectInfo150.csv", "objectInfo150.txt"):
            path = self.root / fname
            if path.is_file():
                return parse_object_info(path)
        return {}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "subset": self.subset}


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
        self.label_dir = self.root / "labels"
        for sub in ("images", "labels"):
            if not (self.root / sub).is_dir():
                raise DatasetError(f"{self.root}: no folder {sub}/; expected {self.EXPECTED}")

    def scenes(self) -> list[Scene]:
        return self.index().scenes

    def index(self) -> SourceIndex:
        return _paired_index(self.root / "images", self.label_path, self.EXPECTED)


SOURCES: dict[str, type[SceneSource]] = {cls.name: cls for cls in (ADE20KSource, FolderSource)}

