"""``predictions``: score label maps another tool already produced (a peer's published outputs, say).

Each sample's prediction is a PNG label map (one grey level, palette index or colour per segment; 0 is an ordinary
segment, not "unassigned", because published label maps use every level for a region). Each distinct level becomes a
one-hot channel, converted with the mask-only rule 5·(2m − 1), so precomputed results go through the same scoring
path as live methods. The file name comes from a pattern with ``{id}`` (record id) and ``{stem}`` (image file stem),
e.g. ``seg{stem}.png``; record ids are data, so the name is resolved inside the predictions folder like any dataset
path. A pattern that names one file for two records of a dataset (``{stem}`` with ``images/a/x.png`` and
``images/b/x.png``) is refused before anything runs: both samples would be scored against one prediction.
"""

from __future__ import annotations

import hashlib
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...data.metadata import SampleRecord, resolve_within
from ...errors import DatasetError, InputError
from ...images import open_image
from ..datasets import add_file, image_stem
from ..metrics import mask_logits
from ..regimes import SampleRegime
from .base import Method, MethodOptions, MethodOutput, check_region_count

DEFAULT_PATTERN = "{stem}.png"
PATTERN_FIELDS = ("id", "stem")
FOLDER = "the predictions folder"


def label_map_logits(labels: np.ndarray, source: str = "prediction") -> np.ndarray:
    """(H, W) integer label map → (L, H, W) logits, one channel per distinct level in increasing order; the level
    count is checked before the channels are allocated (a photo passed as a label map has up to 256 levels)."""
    levels = np.unique(labels)
    check_region_count(len(levels), source)
    return mask_logits(labels[None] == levels[:, None, None])


def label_values(im: Image.Image) -> np.ndarray:
    """(H, W) labels of a label map as it is stored: grey levels, palette indices, 16- or 32-bit integers; a colour
    map's pixels each packed into one integer, so every distinct colour is its own segment (converted to grey, two
    colours of one brightness, such as (255, 0, 0) and (0, 130, 0), would be merged into one)."""
    values = np.asarray(im)
    if values.ndim == 3:
        values = sum(values[..., b].astype(np.int64) << (8 * b) for b in range(values.shape[-1]))
    return values


def check_pattern(name: str, pattern: str) -> None:
    """Refuse a pattern that could not name a file for every sample: malformed braces, fields other than ``{id}`` and
    ``{stem}`` (or with a conversion or format spec), no field at all."""
    where = f"predictions {name!r}: pattern {pattern!r}"
    try:
        fields = [(field, conversion, spec) for _, field, spec, conversion in string.Formatter().parse(pattern)
                  if field is not None]
    except ValueError as exc:
        raise InputError(f"{where} is malformed ({exc}); write {{{{ or }}}} for a literal brace") from None
    for field, conversion, spec in fields:
        if field not in PATTERN_FIELDS or conversion or spec:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InputError(f"{where}: {shown} is not allowed; only {{id}} and {{stem}} may appear in braces")
    if not fields:
        raise InputError(f"{where} must contain {{id}} or {{stem}}")


class PredictionsMethod(Method):
    """Precomputed label maps from ``folder``, one per sample, named by ``pattern``."""

    kind = "predictions"

    def __init__(self, options: MethodOptions, name: str, folder: str | Path, pattern: str = DEFAULT_PATTERN) -> None:
        super().__init__(options, name)
        self.folder = Path(folder).expanduser()
        self.pattern = pattern
        if not self.folder.is_dir():
            raise InputError(f"predictions {name!r}: folder {self.folder} not found")
        check_pattern(name, pattern)
        resolve_within(self.folder, pattern.format(id="x", stem="x"), source=f"predictions {name!r}: pattern "
                       f"{pattern!r}", what=FOLDER)  # an absolute or escaping pattern fails here, not per sample

    def settings(self) -> dict[str, Any]:
        """Another folder or pattern is another experiment: its results must not join this cell's mean."""
        return {"folder": str(self.folder.resolve()), "pattern": self.pattern}

    def file_name(self, sample_id: str, stem: str | None) -> str:
        """The pattern filled in for one sample (the id stands for a missing stem)."""
        return self.pattern.format(id=sample_id, stem=stem or sample_id)

    def check_records(self, dataset: str, records: list[SampleRecord]) -> None:
        """Refuse a pattern that names one file for two records: the second sample would be scored, silently, against
        the first one's prediction (``{stem}`` where two images in different folders share a file name)."""
        owner: dict[str, str] = {}
        for record in records:
            name = os.path.normpath(self.file_name(record.id, image_stem(record)))
            if name in owner:
                raise InputError(f"predictions {self.name!r}: pattern {self.pattern!r} names one file, {name}, for "
                                 f"samples {owner[name]!r} and {record.id!r} of dataset {dataset}; use a pattern "
                                 f"with {{id}} (e.g. '{{id}}.png')")
            owner[name] = record.id

    def path_for(self, regime: SampleRegime) -> Path:
        """The sample's label map; a record id that would lead outside the folder is that sample's error. The stem
        is the sample's own (two datasets may hold one record id, each with its own image file)."""
        return self._path(regime.sample_id, regime.image_stem)

    def _path(self, sample_id: str, stem: str | None) -> Path:
        return resolve_within(self.folder, self.file_name(sample_id, stem),
                              source=f"predictions {self.name!r}: sample {sample_id!r}", what=FOLDER)

    def input_digest(self, record: SampleRecord) -> str | None:
        """The digest of the sample's label map: predictions regenerated into the same folder are scored again. A
        name outside the folder digests as a missing file (the sample fails when it is segmented)."""
        digest = hashlib.sha256()
        try:
            add_file(digest, self._path(record.id, image_stem(record)))
        except DatasetError:
            digest.update(b"\0outside")
        return digest.hexdigest()[:16]

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        path = self.path_for(regime)
        try:
            with open_image(path, "prediction") as im:
                labels = label_values(im)
        except InputError as exc:
            raise DatasetError(str(exc)) from None
        if labels.shape != image.shape[:2]:
            raise DatasetError(f"{path}: prediction is {labels.shape[1]}x{labels.shape[0]} but the image is "
                               f"{image.shape[1]}x{image.shape[0]}")
        return MethodOutput(label_map_logits(labels, f"{path}: prediction"))
