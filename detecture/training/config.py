"""Training configuration: one YAML file (``configs/train.yaml``) mapped onto nested dataclasses.

Why dataclasses rather than a free dict: every key is typed and defaulted in one place, an unknown or misspelt key is
an error naming the file and the key (a silently ignored ``lr_scale`` typo would cost a multi-day run), and the
resolved config is written next to each checkpoint so a resume can check it trains the same thing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..utils.yaml_files import read_yaml

GROUPS = ("head", "lora", "seg_rows")


@dataclass
class ModelConfig:
    """Backbones. ``tiny`` builds random tiny Qwen3-VL / SAM3 (tests, CPU smoke runs; nothing is downloaded)."""

    qwen: str = "Qwen/Qwen3-VL-8B-Instruct"
    sam3: str = "facebook/sam3"
    tiny: bool = False
    quantization: str | None = None  # None | "4bit" | "8bit" (QLoRA-style frozen base; needs bitsandbytes)
    attn_implementation: str | None = None
    gradient_checkpointing: bool = True
    head: dict[str, Any] = field(default_factory=dict)  # HeadConfig overrides (e.g. dropout)


@dataclass
class AugmentConfig:
    """Geometric ops are applied identically to the image and every mask; colour jitter touches the image only."""

    hflip: float = 0.5
    vflip: float = 0.0
    scale_crop: tuple[float, float] = (0.6, 1.0)  # crop side as a fraction of the shorter image side
    scale_crop_prob: float = 0.5
    color_jitter: float = 0.2  # max relative change of brightness / contrast / saturation


@dataclass
class DataConfig:
    max_regions: int = 6
    oracle_fraction: float = 0.5  # share of samples prompted "exactly N" (the rest "between 1 and 6")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 0


@dataclass
class LossConfig:
    """DESIGN §2: total = ce_weight·CE + dice_weight·Dice + lm_weight·LM (Shifted-Zero weighted)."""

    lm_weight: float = 0.1
    shifted_zero_alpha: float = 2.0
    ce_weight: float = 1.0
    dice_weight: float = 3.0


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine; per-group lr = lr × stage scale (DESIGN §2 published schedule)."""

    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    epochs: int = 20
    warmup_epochs: float = 5.0
    stage1_epochs: int = 8  # stage 2 (LoRA + SEG rows trained, head lr decayed) starts after this many epochs
    batch_size: int = 2
    grad_accum: int = 4
    clip_norm: float = 1.0
    stage1_scales: dict[str, float] = field(default_factory=lambda: {"head": 1.0, "lora": 0.0, "seg_rows": 0.0})
    stage2_scales: dict[str, float] = field(default_factory=lambda: {"head": 0.1, "lora": 0.01, "seg_rows": 0.1})


@dataclass
class CacheConfig:
    """Stage-1 feature cache: frozen backbones ⇒ SEG states and SAM3 vision features can be computed once.

    ``vision`` caches the SAM3 FPN maps too (large: ~56 MB per 1008² image in bf16); without it only the Qwen SEG
    states are cached (a few KB per sample) and SAM3's ViT still runs each step. ``views`` augmented views are cached
    per sample and cycled over epochs, so stage 1 still sees some augmentation.
    """

    enabled: bool = False
    dir: str | None = None  # default: <out>/feature_cache
    vision: bool = True
    views: int = 1
    dtype: str = "bfloat16"
    shard_samples: int = 256


@dataclass
class TrainConfig:
    """Run control: precision, logging, checkpoint cadence, the NaN guard and the live-evaluation hook."""

    seed: int = 42
    mixed_precision: str = "bf16"  # "bf16" | "no"
    log_every: int = 1
    save_every_steps: int = 500  # optimizer steps; a checkpoint is also written at every epoch end
    keep_checkpoints: int = 3  # older step-* directories are deleted
    max_nonfinite_steps: int = 10
    eval_every_epochs: int = 1  # 0 disables live evaluation
    eval_max_samples: int = 32
    eval_regime: str = "autonomous"  # "autonomous" (K accuracy is meaningful) or "oracle" (told K)
    emission_check_samples: int = 4  # small validation batch for the per-log-step SEG emission rate
    emission_every_steps: int = 50
    max_new_tokens: int = 300


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, source: str = "config") -> "Config":
        """Reject values that would fail late (after hours of training) or silently train the wrong thing."""
        o = self.optim
        checks = [
            (o.epochs >= 1, "optim.epochs must be >= 1"),
            (0 <= o.stage1_epochs <= o.epochs, "optim.stage1_epochs must be between 0 and optim.epochs"),
            (o.batch_size >= 1 and o.grad_accum >= 1, "optim.batch_size and optim.grad_accum must be >= 1"),
            (o.lr > 0 and 0 <= o.min_lr <= o.lr, "need optim.lr > 0 and 0 <= optim.min_lr <= optim.lr"),
            (o.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0"),
            (1 <= self.data.max_regions <= 6, "data.max_regions must be in 1..6 (the head has 6 texture slots)"),
            (0.0 <= self.data.oracle_fraction <= 1.0, "data.oracle_fraction must be in [0, 1]"),
            (self.model.quantization in (None, "4bit", "8bit"), "model.quantization must be null, '4bit' or '8bit'"),
            (self.train.mixed_precision in ("bf16", "no"), "train.mixed_precision must be 'bf16' or 'no'"),
            (self.train.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
            (self.train.max_nonfinite_steps >= 1, "train.max_nonfinite_steps must be >= 1"),
            (self.train.eval_regime in ("autonomous", "oracle"), "train.eval_regime must be 'autonomous' or 'oracle'"),
            (self.cache.views >= 1, "cache.views must be >= 1"),
            (self.cache.dtype in ("bfloat16", "float32"), "cache.dtype must be 'bfloat16' or 'float32'"),
        ]
        for scales_name in ("stage1_scales", "stage2_scales"):
            scales = getattr(o, scales_name)
            unknown = set(scales) - set(GROUPS)
            checks.append((not unknown, f"optim.{scales_name}: unknown group(s) {sorted(unknown)}; groups are {GROUPS}"))
            checks.append((all(v >= 0 for v in scales.values()), f"optim.{scales_name}: scales must be >= 0"))
        for ok, message in checks:
            if not ok:
                raise InputError(f"{source}: {message}")
        return self


def _build(cls: type, data: dict[str, Any], where: str, source: str) -> Any:
    """Recursively map a dict onto dataclass ``cls``; unknown keys are an error naming the key path."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        raise InputError(f"{source}: unknown key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, path, source)
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            kwargs[name] = float(value)
        elif isinstance(default, dict) and isinstance(value, dict):
            # lr scale maps are merged, so "stage2_scales: {head: 0.2}" keeps the other groups' defaults
            kwargs[name] = {**default, **value} if name.endswith("_scales") else value
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None, source: str = "config") -> Config:
    return _build(Config, data or {}, "", source).validate(source)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (``None`` = all defaults) and apply dotted-key overrides (``{"optim.epochs": 2}``)."""
    data: dict[str, Any] = {}
    source = str(path) if path else "built-in config defaults"
    if path is not None:
        data = read_yaml(path, "config file")[0] or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config_from_dict(data, source)
