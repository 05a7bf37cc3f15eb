"""The Detecture head: everything trained besides the LoRA, saved as one small safetensors checkpoint.

Slots per image are ``[DUSTBIN, SEG_1..SEG_K, PAD..]`` (7 in all). Each live slot's Qwen hidden state goes through
the **Bridge** (Linear -> LayerNorm -> GELU -> Dropout) into the input space of SAM3's frozen ``text_projection``, so
a Bridge output is a one-token prompt SAM3 already knows how to read. SAM3 returns a prompt-conditioned pixel
embedding per slot and the **mask head** (query MLP . 1x1-conv pixel projection) turns it into one logit map per slot.
The learned dustbin slot competes with the textures in the softmax, so "none of the K regions" is learned, not fixed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn as nn
from pydantic import Field, SkipValidation
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..backbones import DEFAULT_QWEN, TINY_NAME
from ..utils.atomic import atomic_dir, moved_aside
from ..errors import CheckpointError, InputError
from ..prompts import MAX_TEXTURES
from ..utils.adapter_files import CONFIG_FILE as ADAPTER_CONFIG, WEIGHTS_FILE as ADAPTER_WEIGHTS, read_adapter_config
from ..utils.file_digest import files_digest
from ..utils.json_files import read_json_object
from ..utils.safetensors_files import tensor_shapes
from ..utils.typed_config import Integer, Number, config_class, parse_config
from .contract import InferenceContract, legacy_contract

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
# The widths the weights' shapes depend on: a config.json must state them, since a default would blame the weights.
SHAPE_KEYS = ("qwen_hidden_size", "sam_text_hidden_size", "prompt_dim", "pixel_dim", "mask_hidden_size")

Width = Annotated[Integer, Field(ge=1)]
# What HeadConfig.for_backbones takes from the loaded backbones (not from its overrides): a training config's
# model.head may set the other keys only.
BACKBONE_KEYS = ("qwen_hidden_size", "sam_text_hidden_size", "prompt_dim", "pixel_dim", "qwen_model", "sam3_model",
                 "qwen_quantization")


@config_class
class HeadConfig:
    """Widths come from the backbones the head is paired with; a head only fits backbones of the same widths.

    Typed like the training config: a wrongly typed, out-of-range or unknown key in a head's ``config.json`` is one
    line naming the file and the key, before any model loads.
    """

    qwen_hidden_size: Width
    sam_text_hidden_size: Width = 1024
    prompt_dim: Width = 256
    pixel_dim: Width = 256
    mask_hidden_size: Width = 256
    bridge_dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.4
    num_slots: Annotated[Integer, Field(ge=2)] = MAX_TEXTURES + 1  # the dustbin and at least one texture
    qwen_model: str = ""
    sam3_model: str = ""
    # The Qwen's bitsandbytes quantization in training (QLoRA), None for full precision: its hidden states, which
    # the LoRA and Bridge were fitted to, differ slightly from the full-precision model's. Inference is told, not
    # forced, since quantization is a memory choice that needs a GPU (pipeline.warn_other_quantization).
    qwen_quantization: Literal["4bit", "8bit"] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # How the head must be run (prompts, positions, image, ...); None in heads saved before contracts existed.
    # Checked by InferenceContract.from_dict when read from a file, which knows its legacy forms.
    contract: SkipValidation[InferenceContract | None] = None

    @classmethod
    def for_backbones(cls, qwen, sam3, **overrides) -> "HeadConfig":
        return cls(**backbone_values(qwen, sam3), mask_hidden_size=overrides.pop("mask_hidden_size", sam3.prompt_dim),
                   contract=overrides.pop("contract", InferenceContract()), **overrides)

    @property
    def max_regions(self) -> int:
        """Texture regions the head grounds per image: every slot but the dustbin."""
        return self.num_slots - 1

    @property
    def effective_contract(self) -> InferenceContract:
        return self.contract if self.contract is not None else legacy_contract()


def backbone_values(qwen, sam3) -> dict[str, Any]:
    """The :data:`BACKBONE_KEYS` of a head trained on ``qwen`` and ``sam3``: their widths, their names (which
    :func:`default_qwen` loads at inference) and the Qwen's quantization."""
    return {"qwen_hidden_size": qwen.hidden_size, "sam_text_hidden_size": sam3.text_hidden_size,
            "prompt_dim": sam3.prompt_dim, "pixel_dim": sam3.pixel_dim, "qwen_model": qwen.name,
            "sam3_model": sam3.name, "qwen_quantization": qwen.quantization}


def default_qwen(config: HeadConfig | None, head: str | Path | None = None) -> str:
    """The Qwen to load when none is named: the one the head (at ``head``) was trained on, its ``qwen_model``, since a
    head only fits that model's width and states; :data:`~detecture.backbones.DEFAULT_QWEN` without a head, or for a
    head that records none. A head trained on tiny random backbones names no Qwen that could load: refused, asking
    for ``--tiny``."""
    if config is not None and config.qwen_model == TINY_NAME:
        raise InputError(f"{head or 'head'}: the head was trained on tiny random backbones; add --tiny (tiny=True) to "
                         "run it on them, or name the Qwen with --qwen")
    return config.qwen_model if config is not None and config.qwen_model else DEFAULT_QWEN


def read_head_config(path: str | Path) -> HeadConfig:
    """The config of a head checkpoint folder, checked against its weights' header (names and shapes, not the
    tensors), and its adapter's files if it has one: commands call it before any model loads, so a wrong ``--head``
    fails in milliseconds."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.exists():
        earlier = moved_aside(path)
        if earlier.is_dir():  # a kill between atomic_dir's two renames, when a head was written over this one
            raise CheckpointError(f"{path}: head checkpoint not found, but the complete one it was replacing is at "
                                  f"{earlier} (the write was interrupted): rename it back, or write the head again")
        raise CheckpointError(f"{path}: head checkpoint not found")
    if not path.is_dir():
        raise CheckpointError(f"{path}: is a file, expected a head checkpoint folder")
    if not config_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{path}: not a head checkpoint (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    raw = read_json_object(config_file, "head config")
    missing = [key for key in SHAPE_KEYS if key not in raw]
    if missing:
        raise CheckpointError(f"{config_file}: missing key {', '.join(missing)}")
    contract = raw.pop("contract", None)
    try:
        config = parse_config(HeadConfig, raw, str(config_file), json=True)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None
    if contract is not None:
        config.contract = InferenceContract.from_dict(contract, str(config_file))
    _check_weights_header(weights_file, config)
    if (path / ADAPTER_DIR).is_dir():
        read_adapter_config(path / ADAPTER_DIR)
    return config


def head_digest(path: str | Path) -> str:
    """Content digest of a head folder: its config, ``model.safetensors`` and, when it has one, its adapter's config
    and weights (the adapter's LoRA and ``<|seg|>`` rows decide the SEG states a run started from this head computes;
    the config's contract decides its masks). A head rewritten at the same path gets another digest, and a copy of
    one keeps it."""
    path = Path(path)
    names = [CONFIG_FILE, WEIGHTS_FILE]
    if (path / ADAPTER_DIR).is_dir():
        names += [f"{ADAPTER_DIR}/{ADAPTER_CONFIG}", f"{ADAPTER_DIR}/{ADAPTER_WEIGHTS}"]
    return files_digest(path, names)


def _check_weights_header(weights_file: Path, config: HeadConfig) -> None:
    """Tensor names and shapes the config implies (built on the meta device: no memory, no init) against the
    safetensors header (read without the tensors, and refused when it or the file is cut short)."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in DetectureHead(config).state_dict().items()}
    found = tensor_shapes(weights_file)
    problems = [f"missing {name}" for name in expected if name not in found]
    problems += [f"unexpected {name}" for name in found if name not in expected]
    problems += [f"{name} has shape {found[name]}, {CONFIG_FILE} implies {shape}"
                 for name, shape in expected.items() if name in found and found[name] != shape]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{weights_file}: weights do not match {CONFIG_FILE}: {problems[0]}{more}")


class Bridge(nn.Module):
    """Qwen hidden state -> SAM3 text-encoder width (before SAM3's frozen ``text_projection``)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.proj = nn.Linear(config.qwen_hidden_size, config.sam_text_hidden_size)
        self.norm = nn.LayerNorm(config.sam_text_hidden_size)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(config.bridge_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.norm(self.proj(hidden_states))))


class MaskHead(nn.Module):
    """Logit map per slot: (query MLP of the slot's prompt) . (1x1 conv of its pixel embedding), times the contract's
    logit scale (Detecture's default 1/sqrt(d) keeps initial logits O(1); the published head has none)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        d = config.mask_hidden_size
        self.query_mlp = nn.Sequential(nn.Linear(config.prompt_dim, d), nn.GELU(), nn.Linear(d, d))
        self.pixel_proj = nn.Conv2d(config.pixel_dim, d, kernel_size=1)
        scale = config.effective_contract.logit_scale
        self.scale = 1.0 / math.sqrt(d) if scale is None else float(scale)

    def forward(self, prompts: torch.Tensor, pixel_embeddings: torch.Tensor) -> torch.Tensor:
        """prompts (N, D), pixel_embeddings (N, C, h, w) -> logits (N, h, w)."""
        dtype = self.pixel_proj.weight.dtype  # the head may be fp32 beside bf16 backbones
        query = self.query_mlp(prompts.to(dtype))
        pixels = self.pixel_proj(pixel_embeddings.to(dtype))
        return torch.einsum("nc,nchw->nhw", query, pixels) * self.scale


class DetectureHead(nn.Module):
    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.bridge = Bridge(config)
        self.dustbin = nn.Parameter(torch.randn(config.qwen_hidden_size) * 0.02)
        self.mask_head = MaskHead(config)

    def slot_states(self, seg_states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pack per-image SEG states (K_i, H) into slots (B, S, H) = [DUSTBIN, SEG_1..K_i, PAD..] and a live mask."""
        num_slots = self.config.num_slots
        batch = len(seg_states)
        slots = self.dustbin.new_zeros(batch, num_slots, self.config.qwen_hidden_size)
        live = torch.zeros(batch, num_slots, dtype=torch.bool, device=self.dustbin.device)
        for b, states in enumerate(seg_states):
            k = states.shape[0]
            if k > self.config.max_regions:
                raise ValueError(f"image {b} has {k} regions; the head has room for {self.config.max_regions}")
            slots[b, 0] = self.dustbin
            slots[b, 1:k + 1] = states.to(slots.dtype)
            live[b, :k + 1] = True
        return slots, live

    def prompts(self, slot_states: torch.Tensor, text_projection: nn.Module) -> torch.Tensor:
        """Slot states (..., H) -> SAM3 prompt tokens (..., D) through the Bridge and SAM3's frozen projection."""
        bridged = self.bridge(slot_states)
        return text_projection(bridged.to(text_projection.weight.dtype))

    def slot_prompts(self, seg_states: list[torch.Tensor], text_projection: nn.Module
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM3 prompts (N, D) of the live slots of all images, in slot order, and the live mask (B, S).

        ``live.nonzero()[:, 0]`` gives the image of each prompt.
        """
        slots, live = self.slot_states(seg_states)
        return self.prompts(slots[live], text_projection), live

    def save_pretrained(self, path: str | Path, adapter_dir: str | Path | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically (and copy a PEFT adapter folder if given).
        ``state_dict`` replaces this module's own tensors, e.g. weights gathered from a sharded training run."""
        import shutil

        path = Path(path)
        with atomic_dir(path) as tmp:
            self.write_into(tmp, state_dict)
            if adapter_dir is not None:
                shutil.copytree(adapter_dir, tmp / ADAPTER_DIR)
        return path

    def write_into(self, folder: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``folder``, the temporary of an :func:`atomic_dir` that
        a caller also writes other parts of the checkpoint into (a converter's adapter)."""
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1) + "\n")
        own = self.state_dict() if state_dict is None else state_dict
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in own.items()}
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path: str | Path, *, qwen_hidden_size: int | None = None) -> "DetectureHead":
        """Load a head folder; ``qwen_hidden_size`` (of the loaded Qwen) is checked against the checkpoint."""
        path = Path(path)
        weights_file = path / WEIGHTS_FILE
        head = cls(read_head_config(path))
        if qwen_hidden_size is not None:
            head.check_qwen_width(qwen_hidden_size, path)
        try:
            state = load_file(str(weights_file))
            head.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise CheckpointError(f"{weights_file}: weights do not match the head config ({exc})") from None
        return head

    def check_qwen_width(self, qwen_hidden_size: int, path: str | Path) -> None:
        """A head only fits the Qwen width it was trained on (2B: 2048, 4B: 2560, 8B: 4096)."""
        if self.config.qwen_hidden_size != qwen_hidden_size:
            raise CheckpointError(
                f"{path}: head was trained for a Qwen with hidden size {self.config.qwen_hidden_size} "
                f"({self.config.qwen_model or 'unknown model'}), but the loaded Qwen has {qwen_hidden_size}; "
                "pass the matching --qwen model or a head trained for this one"
            )

    def check_sam3_widths(self, sam3, path: str | Path | None = None) -> None:
        """A head only fits the SAM3 widths it was trained on: the Bridge writes SAM3's text width, the mask head
        reads its prompt and pixel widths. Checked when a pipeline or a training run is built, not as a shape error
        at the first image or step; ``path``, the head folder, is named in the error when given."""
        loaded = {"sam_text_hidden_size": sam3.text_hidden_size, "prompt_dim": sam3.prompt_dim,
                  "pixel_dim": sam3.pixel_dim}
        wrong = [key for key, width in loaded.items() if getattr(self.config, key) != width]
        if wrong:
            where = f"{path}: " if path is not None else ""
            trained = ", ".join(f"{k} {getattr(self.config, k)}" for k in wrong)
            raise CheckpointError(
                f"{where}head was trained for a SAM3 with {trained} "
                f"({self.config.sam3_model or 'unknown model'}), but the loaded {sam3.name} has "
                f"{', '.join(f'{k} {loaded[k]}' for k in wrong)}; pass the matching --sam3 model or a head trained "
                "for this one"
            )

    def fit_to(self, qwen, sam3, path: str | Path) -> None:
        """Make this head, read from ``path`` to be trained further (``train --init``), the head of ``qwen`` and
        ``sam3``: refused in one line when its widths are not theirs (before any step, not as a shape error at the
        first), then their names and the Qwen's quantization replace the ones it was read with, so the exported head
        names the backbones it was fitted to and :func:`default_qwen` loads that Qwen."""
        self.check_qwen_width(qwen.hidden_size, path)
        self.check_sam3_widths(sam3, path)
        for key, value in backbone_values(qwen, sam3).items():
            setattr(self.config, key, value)

    @staticmethod
    def adapter_path(path: str | Path) -> Path | None:
        adapter = Path(path) / ADAPTER_DIR
        return adapter if adapter.is_dir() else None
