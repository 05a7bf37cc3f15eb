"""Training configuration: one YAML file (``configs/train.yaml``) mapped onto nested typed dataclasses.

Why typed dataclasses rather than a free dict: every key is typed and defaulted in one place, a wrongly typed or
unknown key is an error naming the file and the key (a silently ignored ``lr_scale`` typo would cost a multi-day run),
and the resolved config is written next to each checkpoint so a resume can check it trains the same thing. Types are
checked by :mod:`detecture.utils.typed_config`; a new section is one more ``@config_class`` field of :class:`Config`.
"""

from __future__ import annotations

from dataclasses import asdict, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from ..backbones import DEFAULT_QWEN, DEFAULT_SAM3
from ..errors import InputError
from ..utils.typed_config import Flag, Integer, Number, config_class, parse_config
from ..utils.yaml_files import read_yaml

if TYPE_CHECKING:
    from ..bridge.head import HeadConfig

GROUPS = ("head", "lora", "seg_rows")
STAGE1_SCALES = {"head": 1.0, "lora": 0.0, "seg_rows": 0.0}
STAGE2_SCALES = {"head": 0.1, "lora": 0.01, "seg_rows": 0.1}

# Ranges of single keys are pydantic constraints on the field (an out-of-range value is one line naming the key and
# the bound); rules relating several keys are Config.validate's.
Probability = Annotated[Number, Field(ge=0, le=1)]
Weight = Annotated[Number, Field(ge=0)]  # a negative loss weight would train the model away from its target
CropFraction = Annotated[Number, Field(gt=0, le=1)]


@config_class
class ModelConfig:
    """Backbones. ``tiny`` builds random tiny Qwen3-VL / SAM3 (tests, CPU smoke runs; nothing is downloaded)."""

    qwen: str = DEFAULT_QWEN
    sam3: str = DEFAULT_SAM3
    tiny: Flag = False
    quantization: Literal["4bit", "8bit"] | None = None  # QLoRA-style frozen base; needs bitsandbytes
    attn_implementation: str | None = None
    gradient_checkpointing: Flag = True
    head: dict[str, Any] = field(default_factory=dict)  # HeadConfig overrides (e.g. dropout)


@config_class
class AugmentConfig:
    """Geometric ops are applied identically to the image and every mask; colour jitter touches the image only."""

    hflip: Probability = 0.5
    vflip: Probability = 0.0
    scale_crop: tuple[CropFraction, CropFraction] = (0.6, 1.0)  # crop side as a fraction of the shorter image side
    scale_crop_prob: Probability = 0.5
    # max relative change of brightness / contrast / saturation: factors in [1 - s, 1 + s], so s > 1 is meaningless
    color_jitter: Annotated[Number, Field(ge=0, le=1)] = 0.2


@config_class
class DataConfig:
    max_regions: Integer = 6
    oracle_fraction: Number = 0.5  # share of samples prompted "exactly N" (the rest "between 1 and 6")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: Annotated[Integer, Field(ge=0)] = 0


@config_class
class LossConfig:
    """total = ce_weight·CE + dice_weight·Dice + lm_weight·LM, Shifted-Zero (docs/ARCHITECTURE.md, Training)."""

    lm_weight: Weight = 0.1
    shifted_zero_alpha: Weight = 2.0  # w = 1 - exp(-alpha d): a negative alpha makes the weights negative
    ce_weight: Weight = 1.0
    dice_weight: Weight = 3.0


@config_class
class LoraConfig:
    r: Annotated[Integer, Field(ge=1)] = 8
    alpha: Annotated[Integer, Field(ge=1)] = 16  # the LoRA update is scaled by alpha / r: 0 would switch it off
    dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@config_class
class OptimConfig:
    """AdamW + linear warm-up + cosine; per-group lr = lr × stage scale (the published schedule; see
    docs/ARCHITECTURE.md, Training)."""

    lr: Number = 1e-4
    min_lr: Number = 1e-6
    weight_decay: Number = 0.01
    betas: tuple[Number, Number] = (0.9, 0.999)
    epochs: Integer = 20
    warmup_epochs: Number = 5.0
    stage1_epochs: Integer = 8  # stage 2 (LoRA + SEG rows trained, head lr decayed) starts after this many epochs
    batch_size: Integer = 2
    grad_accum: Integer = 4
    clip_norm: Number = 1.0
    stage1_scales: dict[str, Number] = field(default_factory=lambda: dict(STAGE1_SCALES))
    stage2_scales: dict[str, Number] = field(default_factory=lambda: dict(STAGE2_SCALES))

    def __post_init__(self) -> None:
        """Scale maps are merged with the defaults, so ``stage2_scales: {head: 0.2}`` keeps the other groups'."""
        self.stage1_scales = {**STAGE1_SCALES, **self.stage1_scales}
        self.stage2_scales = {**STAGE2_SCALES, **self.stage2_scales}


@config_class
class CacheConfig:
    """Stage-1 feature cache: frozen backbones ⇒ SEG states and SAM3 vision features can be computed once.

    ``vision`` caches the SAM3 FPN maps too (large: ~56 MB per 1008² image in bf16); without it only the Qwen SEG
    states are cached (a few KB per sample) and SAM3's ViT still runs each step. ``views`` augmented views are cached
    per sample and cycled over epochs, so stage 1 still sees some augmentation.
    """

    enabled: Flag = False
    dir: str | None = None  # default: <out>/feature_cache
    vision: Flag = True
    views: Integer = 1
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    shard_samples: Annotated[Integer, Field(ge=1)] = 256


@config_class
class TrainConfig:
    """Run control: precision, logging, checkpoint cadence, the NaN guard and the live-evaluation hook."""

    seed: Integer = 42
    mixed_precision: Literal["bf16", "no"] = "bf16"  # "bf16" | "no"
    log_every: Integer = 1
    save_every_steps: Integer = 500  # optimizer steps (0: none); a checkpoint is also written at every epoch end
    keep_checkpoints: Integer = 3  # older step-* directories are deleted
    max_nonfinite_steps: Integer = 10
    eval_every_epochs: Integer = 1  # 0 disables live evaluation
    eval_max_samples: Integer = 32
    eval_regime: Literal["autonomous", "oracle"] = "autonomous"  # autonomous: K accuracy is meaningful; oracle: told K
    emission_check_samples: Integer = 4  # small validation batch for the per-log-step SEG emission rate
    emission_every_steps: Integer = 50
    max_new_tokens: Integer = 300


@config_class
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

    def validate(self, source: str = "config", origins: dict[str, str] | None = None) -> "Config":
        """Reject values that would fail late (after hours of training) or silently train the wrong thing.

        ``origins`` maps a dotted key set on the command line to how it was given (``--epochs``), so a failed check
        blames the option rather than ``source`` for a value the file never held.
        """
        o, t = self.optim, self.train
        checks: list[tuple[bool, tuple[str, ...], str]] = [
            (o.epochs >= 1, ("optim.epochs",), "optim.epochs must be >= 1"),
            (0 <= o.stage1_epochs <= o.epochs, ("optim.stage1_epochs", "optim.epochs"),
             f"optim.stage1_epochs ({o.stage1_epochs}) must be between 0 and optim.epochs ({o.epochs})"),
            (o.batch_size >= 1 and o.grad_accum >= 1, ("optim.batch_size", "optim.grad_accum"),
             "optim.batch_size and optim.grad_accum must be >= 1"),
            (o.lr > 0 and 0 <= o.min_lr <= o.lr, ("optim.lr", "optim.min_lr"),
             "need optim.lr > 0 and 0 <= optim.min_lr <= optim.lr"),
            (o.warmup_epochs >= 0, ("optim.warmup_epochs",), "optim.warmup_epochs must be >= 0"),
            (o.weight_decay >= 0, ("optim.weight_decay",), "optim.weight_decay must be >= 0"),
            (all(0 <= b < 1 for b in o.betas), ("optim.betas",), "optim.betas must both be in [0, 1) (AdamW's rule)"),
            # torch clips with any max_norm: a negative one flips every gradient, zero erases them.
            (o.clip_norm > 0, ("optim.clip_norm",), "optim.clip_norm must be > 0"),
            (1 <= self.data.max_regions <= 6, ("data.max_regions",),
             "data.max_regions must be in 1..6 (the most regions a response holds)"),
            (0.0 <= self.data.oracle_fraction <= 1.0, ("data.oracle_fraction",),
             "data.oracle_fraction must be in [0, 1]"),
            (self.data.augment.scale_crop[0] <= self.data.augment.scale_crop[1], ("data.augment.scale_crop",),
             "data.augment.scale_crop must be [smallest, largest], got "
             f"{list(self.data.augment.scale_crop)}"),
            (self.train.keep_checkpoints >= 1, ("train.keep_checkpoints",), "train.keep_checkpoints must be >= 1"),
            (self.train.max_nonfinite_steps >= 1, ("train.max_nonfinite_steps",),
             "train.max_nonfinite_steps must be >= 1"),
            # None of these has an off value: the loop takes step % log_every, and scoring needs a sample and a token.
            *((getattr(t, name) >= 1, (f"train.{name}",), f"train.{name} must be >= 1")
              for name in ("log_every", "emission_check_samples", "eval_max_samples", "max_new_tokens")),
            # 0 switches these off; a negative one would act as its absolute value (n % -k == 0 when n % k == 0).
            *((getattr(t, name) >= 0, (f"train.{name}",), f"train.{name} must be >= 0 (0 switches it off)")
              for name in ("save_every_steps", "eval_every_epochs", "emission_every_steps")),
            (self.cache.views >= 1, ("cache.views",), "cache.views must be >= 1"),
        ]
        for scales_name in ("stage1_scales", "stage2_scales"):
            scales, key = getattr(o, scales_name), f"optim.{scales_name}"
            unknown = set(scales) - set(GROUPS)
            checks.append((not unknown, (key,), f"{key}: unknown group(s) {sorted(unknown)}; groups are {GROUPS}"))
            checks.append((all(v >= 0 for v in scales.values()), (key,), f"{key}: scales must be >= 0"))
        origins = origins or {}
        for ok, keys, message in checks:
            if not ok:
                given = [origins[k] for k in keys if k in origins]
                raise InputError(f"{', '.join(given) if given else source}: {message}")
        self._check_head_overrides(source, origins)
        return self

    def _check_head_overrides(self, source: str, origins: dict[str, str]) -> None:
        """``model.head`` feeds :class:`~detecture.bridge.head.HeadConfig` after the backbones load; its own types
        and ranges are checked now (the widths the backbones decide get a stand-in value). The keys the backbones
        decide, and the inference contract (Detecture's own for a fresh head, the ``--init`` head's otherwise), are
        no overrides: refused now rather than failing once the backbones have loaded. ``num_slots`` must hold the
        dustbin and ``data.max_regions`` regions, or the first sample with more would stop the run, maybe hours in."""
        from ..bridge.head import BACKBONE_KEYS, HeadConfig  # torch: only once a config is read

        given = [name for key, name in origins.items() if key == "model.head" or key.startswith("model.head.")]
        where = ", ".join(given) if given else source
        if "contract" in self.model.head:
            raise InputError(f"{where}: model.head.contract cannot be set: a fresh head trains under Detecture's "
                             "contract, and --init HEAD trains under that head's")
        decided = [key for key in BACKBONE_KEYS if key in self.model.head]
        if decided:
            raise InputError(f"{where}: model.head.{decided[0]} cannot be set: it is taken from the loaded "
                             "backbones (model.qwen, model.sam3)")
        try:
            head = parse_config(HeadConfig, {"qwen_hidden_size": 1, **self.model.head}, "model.head")
        except InputError as exc:
            raise InputError(f"{where}: model.head.{str(exc).split(': ', 1)[1]}") from None
        if head.max_regions < self.data.max_regions:
            given = [name for key, name in origins.items() if key == "data.max_regions"] + given
            raise InputError(
                f"{', '.join(given) if given else source}: model.head.num_slots ({head.num_slots}) must be at least "
                f"data.max_regions + 1 ({self.data.max_regions + 1}): the slots are the dustbin and one per region, "
                "and a training sample may have data.max_regions regions")

    def check_init_head(self, head: HeadConfig, path: str | Path) -> None:
        """An ``--init`` head keeps its own slots (``model.head`` does not apply to it): refused before any backbone
        loads when a training sample may have more regions than it has room for, which would otherwise stop the run
        at the first such sample, maybe hours in."""
        if head.max_regions < self.data.max_regions:
            raise InputError(
                f"{path}: the head has num_slots {head.num_slots}, room for {head.max_regions} regions beside the "
                f"dustbin, fewer than data.max_regions ({self.data.max_regions}) a training sample may have; train "
                f"it with --set data.max_regions={head.max_regions}")


def config_from_dict(data: dict[str, Any] | None, source: str = "config",
                     overrides: dict[str, Any] | None = None, options: dict[str, str] | None = None) -> Config:
    """``options`` names the command-line option behind an override key (default ``--set KEY``), for errors."""
    origins = {key: f"--set {key}" for key in overrides or {}} | (options or {})
    return parse_config(Config, data, source, overrides).validate(source, origins)


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None,
                options: dict[str, str] | None = None) -> Config:
    """Read a YAML config (``None`` = all defaults) and apply dotted-key overrides (``{"optim.epochs": 2}``);
    ``options`` maps an override key to the option that set it (``{"optim.epochs": "--epochs"}``) for errors."""
    data: Any = None
    source = str(path) if path else "built-in config defaults"
    if path is not None:
        data = read_yaml(path, "config file")[0]
    return config_from_dict(data, source, overrides, options)
