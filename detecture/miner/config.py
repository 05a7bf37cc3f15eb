"""Miner settings from a YAML file, validated once so a typo fails at start-up, not 20k scenes later.

Every key is required (the file is the single place the miner's behaviour is spelt out) and typed through
:mod:`detecture.utils.typed_config`; the checks below are the cross-key ones types cannot express. The defaults are
``detecture/miner/miner.yaml``, shipped inside the package (package data in ``pyproject.toml``) so that any install,
not only an editable checkout, finds them; ``configs/miner.yaml`` is an identical copy for users to edit.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import InputError
from ..utils.typed_config import Integer, Number, config_class, parse_config
from ..utils.yaml_files import read_yaml

MAX_REGIONS_LIMIT = 6


DEFAULT_CONFIG = "miner.yaml"


def packaged_file(name: str) -> Path:
    """A data file shipped in ``detecture.miner`` (the default config, class vocabularies): read from the installed
    package, since a wheel holds no ``configs/`` folder beside it."""
    return Path(str(resources.files(__package__).joinpath(name)))


@config_class(frozen=True)
class ScoringConfig:
    large_region_min_area: Number
    ideal_region_count: tuple[Integer, Integer]
    boundary_length: tuple[Number, Number, Number]
    coverage: tuple[Number, Number]
    clutter_area_max: Number
    clutter_classes_max: Integer
    clutter_min_area: Number
    ambiguous_area_max: Number
    weights: dict[str, Number]
    penalties: dict[str, Number]


@config_class(frozen=True)
class RegionConfig:
    min_regions: Integer
    max_regions: Integer
    min_area: Number


@config_class(frozen=True)
class DescriberConfig:
    min_words: Integer
    max_words: Integer
    qwen_model: str
    max_new_tokens: Integer


@config_class(frozen=True)
class SplitConfig:
    val_fraction: Number


@config_class(frozen=True)
class ReportConfig:
    contact_sheet_samples: Integer


@config_class(frozen=True)
class MinerSettings:
    """The YAML file's keys; a new section is one more field here."""

    version: Integer
    threshold: Number
    scoring: ScoringConfig
    regions: RegionConfig
    describer: DescriberConfig
    split: SplitConfig
    report: ReportConfig


@dataclass(frozen=True)
class MinerConfig(MinerSettings):
    """The settings plus where they came from."""

    path: Path
    digest: str  # sha256 of the file, which a run.json holding config_sha256 is compared with


WEIGHT_KEYS = ("region_count", "balance", "boundary_length", "boundary_straightness", "coverage")
PENALTY_KEYS = ("clutter", "ambiguous")


def _check(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise InputError(f"{where}: {message}")


def _validate(cfg: MinerConfig, where: str) -> None:
    s, r, d = cfg.scoring, cfg.regions, cfg.describer
    _check(0 <= cfg.threshold <= 100, where, f"threshold must be in [0, 100], got {cfg.threshold}")
    _check(sorted(s.weights) == sorted(WEIGHT_KEYS), where, f"scoring.weights needs exactly {list(WEIGHT_KEYS)}")
    _check(sorted(s.penalties) == sorted(PENALTY_KEYS), where, f"scoring.penalties needs exactly {list(PENALTY_KEYS)}")
    _check(all(v >= 0 for v in [*s.weights.values(), *s.penalties.values()]), where, "weights must be >= 0")
    _check(sum(s.weights.values()) > 0, where, "scoring.weights must not all be 0")
    lo, hi = s.ideal_region_count
    _check(1 <= lo <= hi, where, "scoring.ideal_region_count must be [low, high] with 1 <= low <= high")
    a, b, c = s.boundary_length
    _check(0 < a <= b < c, where, "scoring.boundary_length must be [low, high, max] with 0 < low <= high < max")
    _check(0 <= s.coverage[0] < s.coverage[1] <= 1, where, "scoring.coverage must be [low, high] in [0, 1]")
    _check(r.min_area > 0 and r.min_area * r.max_regions <= 1, where, "regions.min_area must be in (0, 1/max_regions]")
    _check(
        1 <= r.min_regions <= r.max_regions <= MAX_REGIONS_LIMIT,
        where,
        f"regions need 1 <= min_regions <= max_regions <= {MAX_REGIONS_LIMIT}",
    )
    _check(1 <= d.min_words <= d.max_words, where, "describer needs 1 <= min_words <= max_words")
    _check(0 <= cfg.split.val_fraction < 1, where, "split.val_fraction must be in [0, 1)")


def load_config(path: str | os.PathLike | None = None) -> MinerConfig:
    """Read and validate the miner config (default: the packaged ``miner.yaml``); errors name the file and the key."""
    path = Path(path) if path is not None else packaged_file(DEFAULT_CONFIG)
    data, raw_bytes = read_yaml(path, "miner config", " (pass --config PATH)")
    where = str(path)
    settings = parse_config(MinerSettings, data, where)
    cfg = MinerConfig(**{f.name: getattr(settings, f.name) for f in fields(settings)}, path=path,
                      digest=hashlib.sha256(raw_bytes).hexdigest())
    _validate(cfg, where)
    return cfg
