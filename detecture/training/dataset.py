"""Training dataset over the unified metadata (docs/ARCHITECTURE.md, Data).

Bad samples (missing or unreadable file, mask size mismatch, empty mask, more regions than the head has slots, no
region at all, a description holding a control token's text) are found by one scan when the dataset is opened,
logged one line each, counted by reason, and left out; the counts are reported again at the end of training.
Regions with an empty description are kept (the Bridge trains from their masks) but counted and warned about once,
since the LM loss then teaches the model to write an entry with no words for them.
Scanning up front (rather than skipping inside ``__getitem__``) keeps every rank's epoch the same length, which DDP
needs, and makes the data position of a checkpoint meaningful.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.layouts import read_records
from ..data.metadata import LoadedSample, SampleRecord, load_sample, resolve_within
from ..errors import DatasetError
from ..prompts import Regime, control_token_in
from ..utils.faults import is_input_fault
from .augment import augment, mirror_words, sample_rng
from .config import DataConfig

log = logging.getLogger(__name__)


def wordless(description: str) -> bool:
    """Whether a description has no words: its LM target is then ``TEXTURE_k: <|seg|>``
    (:func:`~detecture.prompts.format_response` drops whitespace)."""
    return not description.split()


@dataclass
class ScanReport:
    """Outcome of the up-front scan: kept records and skipped ones by reason."""

    kept: list[SampleRecord]
    skipped: Counter = field(default_factory=Counter)

    @property
    def regions(self) -> int:
        """Texture regions of the kept samples."""
        return sum(len(r.textures) for r in self.kept)

    @property
    def empty_descriptions(self) -> int:
        """Regions of the kept samples whose description has no words: a dataset made without a describer (Outex,
        say) trains the Bridge from its masks but teaches the model no words."""
        return sum(wordless(t.description) for r in self.kept for t in r.textures)

    def empty_description_warning(self) -> str | None:
        """The one warning about regions without words, or None when every region has some."""
        empty = self.empty_descriptions
        if not empty:
            return None
        samples = sum(any(wordless(t.description) for t in r.textures) for r in self.kept)
        return (f"{empty} of {self.regions} regions (in {samples} of {len(self.kept)} samples) have an empty "
                "description; they are kept, since the Bridge trains from their masks, but the LM loss then learns "
                "an empty description line ('TEXTURE_k: <|seg|>') for each, so the model learns to name no texture "
                "in words")

    @cached_property
    def digest(self) -> str:
        """sha256 of the kept records, in order (ids, file paths, descriptions): what a checkpoint's data position and
        the stage-1 feature cache's sample indices refer to. Skipped records leave it unchanged; a record added,
        removed, reordered or edited changes it. Computed once: the scan's outcome does not change afterwards, and
        serialising every record again costs seconds on a large dataset."""
        records = json.dumps([r.to_json() for r in self.kept], sort_keys=True)
        return hashlib.sha256(records.encode()).hexdigest()

    def summary(self) -> str:
        total = sum(self.skipped.values())
        empty = f"; {self.empty_descriptions} of {self.regions} regions with an empty description" \
            if self.empty_descriptions else ""
        if not total:
            return f"{len(self.kept)} samples, none skipped{empty}"
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        return f"{len(self.kept)} samples kept, {total} skipped ({reasons}){empty}"


def check_sample(root: Path, record: SampleRecord, max_regions: int) -> str | None:
    """The reason ``record`` cannot be trained on, or None. Logs the specific problem (file and cause).

    A bad record (its file missing, unreadable or badly named) is skipped; a failing system raises its ``OSError``
    (:mod:`detecture.utils.faults`), which stops the run rather than silently shrinking the training set."""
    if not record.textures:
        log.warning("skipping %s: no texture regions", record.id)
        return "no regions"
    if len(record.textures) > max_regions:
        log.warning("skipping %s: %d regions, at most %d are supported", record.id, len(record.textures), max_regions)
        return "too many regions"
    for texture in record.textures:
        token = control_token_in(texture.description)
        if token:  # tokenised as the token itself: an extra <|seg|> would shift every later region's SEG state
            log.warning("skipping %s: description %r holds %r, the text of a model control token", record.id,
                        texture.description, token)
            return "control token in description"
    try:
        paths = [record.image_path, *(t.mask_path for t in record.textures)]
        missing = [p for p in paths if not resolve_within(root, p, source=f"record {record.id!r}").is_file()]
        if missing:
            log.warning("skipping %s: missing file(s) %s under %s", record.id, missing, root)
            return "missing file"
        sample = load_sample(root, record)
    except DatasetError as exc:
        log.warning("skipping %s: %s", record.id, exc)
        return "size mismatch" if "mask is" in str(exc) else "unreadable or unsafe file"
    except OSError as exc:
        if not is_input_fault(exc):
            raise  # the system failed (permission, I/O): training stops, and a re-run reads the file
        log.warning("skipping %s: %s: %s", record.id, exc.filename, exc.strerror)  # e.g. a path name too long
        return "unreadable or unsafe file"
    empty = [t.mask_path for t, m in zip(record.textures, sample.masks) if not m.any()]
    if empty:
        log.warning("skipping %s: empty mask(s) %s", record.id, empty)
        return "empty mask"
    return None


def scan(root: Path, records: list[SampleRecord], max_regions: int, workers: int = 8) -> ScanReport:
    """Check every record (threads: decoding PNGs releases the GIL) and keep the good ones in their original order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(lambda r: check_sample(root, r, max_regions), records))
    report = ScanReport(kept=[r for r, why in zip(records, reasons) if why is None])
    report.skipped.update(why for why in reasons if why is not None)
    return report


@dataclass(frozen=True)
class TrainItem:
    """One augmented training example; ``masks[k]`` belongs to ``descriptions[k]`` (already shuffled together)."""

    id: str
    image: np.ndarray
    masks: np.ndarray
    descriptions: list[str]
    regime: Regime


class TextureDataset(Dataset):
    """Unified-metadata dataset yielding :class:`TrainItem`; deterministic given (seed, epoch, index).

    Per item: region order is shuffled (so the model cannot learn a fixed order) and the count regime is drawn,
    ``oracle_fraction`` of the time "exactly N" and otherwise "between 1 and 6", so the model learns both prompts.
    """

    def __init__(self, root: str | Path, cfg: DataConfig, seed: int, train: bool = True) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.seed = seed
        self.train = train
        self.epoch = 0
        self.report = scan(self.root, read_records(self.root), cfg.max_regions)
        log.info("%s: %s", self.root, self.report.summary())
        warning = self.report.empty_description_warning()
        if warning:
            log.warning("%s: %s", self.root, warning)
        if not self.report.kept:
            raise DatasetError(f"{self.root}: no usable samples ({self.report.summary()})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.report.kept)

    def load(self, index: int) -> LoadedSample:
        return load_sample(self.root, self.report.kept[index])

    def item(self, index: int, epoch: int) -> TrainItem:
        sample = self.load(index)
        image, masks, descriptions = sample.image, sample.masks, sample.descriptions
        regime_rng = sample_rng(self.seed, epoch, index, stream=1)
        if self.train:
            augment_rng = sample_rng(self.seed, epoch, index, stream=0)
            image, masks, flips = augment(image, masks, self.cfg.augment, augment_rng)
            descriptions = [mirror_words(d, flips) for d in descriptions]
            keep = masks.any(axis=(1, 2))
            masks, descriptions = masks[keep], [d for d, k in zip(descriptions, keep) if k]
            order = regime_rng.permutation(len(descriptions))
            masks, descriptions = masks[order], [descriptions[i] for i in order]
        k = len(descriptions)
        oracle = not self.train or regime_rng.random() < self.cfg.oracle_fraction
        regime = Regime.oracle(k) if oracle else Regime.autonomous()
        return TrainItem(id=sample.record.id, image=image, masks=masks, descriptions=descriptions, regime=regime)

    def __getitem__(self, index: int) -> TrainItem:
        return self.item(index, self.epoch)


class EpochSampler(torch.utils.data.Sampler[int]):
    """This rank's share of a seeded per-epoch permutation, starting at a given position (for exact resume).

    Every rank gets the same number of indices (the permutation is padded by wrapping), so DDP ranks step together.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip the first ``start`` indices of this rank's share."""
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            perm = torch.randperm(self.size, generator=g).tolist()
        else:
            perm = list(range(self.size))
        per_rank = -(-self.size // self.world_size)
        perm = (perm * (1 + per_rank * self.world_size // max(1, self.size)))[: per_rank * self.world_size]
        return perm[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return len(self.indices()) - self.start


def collate_items(items: list[TrainItem]) -> list[TrainItem]:
    """Identity collate: tokenisation and SAM3 preprocessing happen in the main process (see ``batching``)."""
    return items
