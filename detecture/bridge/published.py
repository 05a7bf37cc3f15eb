"""Import the published NeurIPS 2026 checkpoint (``best.pt``) as a Detecture head folder + PEFT adapter.

The published file (docs/ARCHITECTURE.md, The published checkpoint) is one ``torch.save`` dict: ``model_trainable``
holds the LoRA tensors, the *full* input-embedding and LM-head matrices (only their ``<|seg|>`` row was trained),
and the head; ``optimizer`` holds AdamW moments for all of it. Nearly all of its 7.5 GB is the two matrices and
their moments, so it is opened with ``mmap=True``: only the tensors actually read (LoRA, head, two rows) are paged
in and peak memory stays a small fraction of the file. ``weights_only=True`` means a file holding anything but
tensors and builtins is refused, never executed (:mod:`detecture.utils.torch_files`). Every key must be known: a
missing key or an unknown one is an error listing both, because a silently skipped key (as the published loader
does) is a silently different model; every tensor's rank is checked before any shape is read off it.

The ``<|seg|>`` index is the last row of the published matrices (the published code grew them to
``len(tokenizer)`` when it added the token); it is written into the adapter config and checked at load time against
the tokenizer's own ``<|seg|>`` id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from ..errors import InputError
from ..utils.atomic import atomic_dir
from ..utils.torch_files import load_checkpoint, tensor_dict
from .contract import published_contract
from .head import ADAPTER_DIR, DetectureHead, HeadConfig

LAYOUT = yaml.safe_load(resources.files(__package__).joinpath("published_layout.yaml").read_text(encoding="utf-8"))
TOP_LEVEL, METADATA = tuple(LAYOUT["top_level"]), tuple(LAYOUT["metadata"])
OPTIONAL = tuple(LAYOUT["optional_trainable"])
EMBED, LM_HEAD, LORA_KEY = LAYOUT["embed_tokens"], LAYOUT["lm_head"], LAYOUT["lora"]
LORA_TARGETS, LORA_ALPHA = tuple(LAYOUT["lora_targets"]), int(LAYOUT["lora_alpha"])
HEAD_KEYS: dict[str, str] = LAYOUT["head"]  # published name -> Detecture name
THEIRS = {ours: theirs for theirs, ours in HEAD_KEYS.items()}  # Detecture name -> published name
LORA_RE = re.compile("^" + re.escape(LORA_KEY).replace(re.escape("{layer}"), r"(\d+)")
                     .replace(re.escape("{target}"), "(" + "|".join(LORA_TARGETS) + ")")
                     .replace(re.escape("{ab}"), "(A|B)") + "$")


def lora_key(layer: int | str, target: str, ab: str) -> str:
    """The published name of one LoRA matrix (``ab``: "A" or "B")."""
    return LORA_KEY.format(layer=layer, target=target, ab=ab)


@dataclass
class Published:
    """The parts of a validated ``best.pt`` that conversion needs (tensors may be memory-mapped)."""

    path: Path
    trainable: dict[str, torch.Tensor]
    dustbin: torch.Tensor
    metadata: dict[str, Any]
    layers: int
    rank: int

    @property
    def seg_index(self) -> int:
        return self.trainable[EMBED].shape[0] - 1

    @property
    def hidden_size(self) -> int:
        return self.trainable[EMBED].shape[1]


def load_published(path: str | Path) -> Published:
    """Open ``best.pt`` safely (weights_only, mmap) and check its structure; raises one :class:`InputError`.

    The checks run in the order that lets each one trust the last: the file's layout, then that every entry is a
    named floating-point tensor, then the key names, then each tensor's rank, and only then the shapes, which are read
    off the tensors themselves."""
    path = Path(path)
    raw = load_checkpoint(path, "best.pt",
                          "download it with: hf download anon-detecture-neurips-2026/Detecture-NeurIPS best.pt")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a dict checkpoint, found {type(raw).__name__}")
    missing = [k for k in TOP_LEVEL if k not in raw]
    unknown = sorted(str(k) for k in raw if k not in TOP_LEVEL + METADATA)
    if missing or unknown:
        raise InputError(f"{path}: not the published checkpoint layout; missing keys {missing}, unknown keys {unknown}")
    trainable = tensor_dict(path, raw["model_trainable"], "model_trainable")
    dustbin = tensor_dict(path, {"dustbin_embed": raw["dustbin_embed"]}, "the checkpoint")["dustbin_embed"]
    for key, tensor in {**trainable, "dustbin_embed": dustbin}.items():
        if not tensor.is_floating_point():
            raise InputError(f"{path}: {key} holds {tensor.dtype} values; the published weights are floating point")
    layers = _check_keys(path, trainable)
    _check_ranks(path, trainable, dustbin)
    rank = int(trainable[lora_key(0, LORA_TARGETS[0], "A")].shape[0])
    published = Published(path, trainable, dustbin, {k: raw[k] for k in METADATA if k in raw and k != "optimizer"},
                          layers, rank)
    _check_shapes(published)
    return published


def _check_keys(path: Path, trainable: dict[str, torch.Tensor]) -> int:
    """Every expected key present, none unknown; returns the number of LoRA layers."""
    lora = [LORA_RE.match(k) for k in trainable]
    indices = [int(m.group(1)) for m in lora if m]
    layers = max(indices) + 1 if indices else 0
    expected = {EMBED, LM_HEAD, *HEAD_KEYS}
    expected |= {lora_key(i, t, ab) for i in range(layers) for t in LORA_TARGETS for ab in "AB"}
    missing = sorted(expected - set(trainable))
    if layers == 0:
        missing.append(lora_key("<i>", "<" + "|".join(LORA_TARGETS) + ">", "<A|B>"))
    unknown = sorted(set(trainable) - expected - set(OPTIONAL))
    if missing or unknown:
        raise InputError(f"{path}: model_trainable does not match the published model; missing keys "
                         f"{_short(missing)}, unknown keys {_short(unknown)}")
    return layers


def _check_ranks(path: Path, trainable: dict[str, torch.Tensor], dustbin: torch.Tensor) -> None:
    """Each tensor has the number of dimensions its role needs (matrices 2, the 1x1 convolution 4, biases and norms
    1, the dustbin and the optional extra embeddings 3), so the shape check below can index any of them."""
    expected = {key: 2 for key in trainable if LORA_RE.match(key)}
    expected |= {EMBED: 2, LM_HEAD: 2, "dustbin_embed": 3, **{key: 3 for key in OPTIONAL}}
    expected |= {THEIRS[ours]: len(shape) for ours, shape in _head_shapes(0, 0, 0, 0, 0).items()}
    for key, tensor in {**trainable, "dustbin_embed": dustbin}.items():
        dims = expected[key]
        if tensor.dim() != dims:
            raise InputError(f"{path}: {key} has shape {tuple(tensor.shape)}, expected {dims} dimensions")
    if trainable[EMBED].shape[0] == 0 or trainable[LM_HEAD].shape[0] == 0:
        raise InputError(f"{path}: {EMBED} / {LM_HEAD} have no rows, so the trained <|seg|> row (their last) is "
                         "missing")


def _short(keys: list[str], limit: int = 8) -> str:
    return str(keys) if len(keys) <= limit else f"{keys[:limit]} and {len(keys) - limit} more"


def _check_shapes(p: Published) -> None:
    """Shapes follow from four widths read off the file; any tensor that disagrees is named."""
    t = p.trainable
    hidden, vocab = p.hidden_size, t[EMBED].shape[0]
    ours = _head_shapes(hidden, *_widths(p))
    expected = {EMBED: (vocab, hidden), LM_HEAD: (vocab, hidden), **{THEIRS[k]: v for k, v in ours.items()}}
    for name in OPTIONAL:
        if name in t:
            expected[name] = (1, 1, hidden)
    for i in range(p.layers):
        for target in LORA_TARGETS:
            expected[lora_key(i, target, "A")] = (p.rank, hidden)
            expected[lora_key(i, target, "B")] = (t[lora_key(i, target, "B")].shape[0], p.rank)
    for key, shape in expected.items():
        if tuple(t[key].shape) != shape:
            raise InputError(f"{p.path}: {key} has shape {tuple(t[key].shape)}, expected {shape}")
    if tuple(p.dustbin.shape) != (1, 1, hidden):
        raise InputError(f"{p.path}: dustbin_embed has shape {tuple(p.dustbin.shape)}, expected (1, 1, {hidden})")


def _head_shapes(hidden: int, text: int, prompt: int, mask: int, pixel: int) -> dict[str, tuple[int, ...]]:
    """The head's tensor shapes (Detecture names) for the given widths; their lengths are the ranks."""
    return {
        "bridge.proj.weight": (text, hidden), "bridge.proj.bias": (text,),
        "bridge.norm.weight": (text,), "bridge.norm.bias": (text,),
        "mask_head.query_mlp.0.weight": (prompt, prompt), "mask_head.query_mlp.0.bias": (prompt,),
        "mask_head.query_mlp.2.weight": (mask, prompt), "mask_head.query_mlp.2.bias": (mask,),
        "mask_head.pixel_proj.weight": (mask, pixel, 1, 1), "mask_head.pixel_proj.bias": (mask,),
    }


def _widths(p: Published) -> tuple[int, int, int, int]:
    """(SAM3 text width, prompt width, mask width, pixel width), read off the head tensors."""
    t = p.trainable
    return (t[THEIRS["bridge.proj.weight"]].shape[0], t[THEIRS["mask_head.query_mlp.0.weight"]].shape[1],
            t[THEIRS["mask_head.query_mlp.2.weight"]].shape[0], t[THEIRS["mask_head.pixel_proj.weight"]].shape[1])


def head_state(p: Published) -> tuple[HeadConfig, dict[str, torch.Tensor]]:
    """Detecture head config + state dict (published keys renamed, dustbin (1, 1, H) -> (H,)); logit scale 1.0 is
    recorded in the contract rather than folded into the weights, so the tensors stay the published ones."""
    t = p.trainable
    state = {ours: t[theirs].clone() for theirs, ours in HEAD_KEYS.items()}
    state["dustbin"] = p.dustbin.reshape(-1).clone()
    text, prompt, mask, pixel = _widths(p)
    config = HeadConfig(
        qwen_hidden_size=p.hidden_size, sam_text_hidden_size=text, prompt_dim=prompt, pixel_dim=pixel,
        mask_hidden_size=mask, bridge_dropout=float(LAYOUT["bridge_dropout"]),
        qwen_model=LAYOUT["qwen_model"], sam3_model=LAYOUT["sam3_model"],
    )
    return config, state


def adapter_tensors(p: Published) -> dict[str, torch.Tensor]:
    """LoRA + ``<|seg|>`` rows under the names PEFT's ``save_pretrained`` uses for Detecture's own adapters."""
    out = {}
    for key, value in p.trainable.items():
        if LORA_RE.match(key):
            out[key.removeprefix("qwen.").replace(".default.weight", ".weight")] = value.clone()
    seg = p.seg_index
    out["base_model.model.model.language_model.embed_tokens.token_adapter.trainable_tokens_delta"] = \
        p.trainable[EMBED][seg:seg + 1].clone()
    out["base_model.model.lm_head.token_adapter.trainable_tokens_delta"] = p.trainable[LM_HEAD][seg:seg + 1].clone()
    return out


def write_adapter(p: Published, folder: Path) -> None:
    """The LoRA + ``<|seg|>`` rows as a PEFT adapter folder, loadable by ``PeftModel.from_pretrained``."""
    from peft import LoraConfig

    config = LoraConfig(
        r=p.rank, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
        target_modules=rf".*language_model.*\.({'|'.join(LORA_TARGETS)})",
        trainable_token_indices={"embed_tokens": [p.seg_index], "lm_head": [p.seg_index]},
        base_model_name_or_path=LAYOUT["qwen_model"],
    )
    config.save_pretrained(str(folder))
    save_file(adapter_tensors(p), str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def convert(src: str | Path, out: str | Path, base: str | None = None) -> tuple[Path, float | None]:
    """Convert ``src`` (published ``best.pt``) into the head folder ``out``; returns (out, shrink factor or None)."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or src.resolve().is_relative_to(out.resolve()):
        raise InputError(f"{out}: --out would overwrite the input {src}; choose another folder")
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new --out folder (nothing is overwritten)")
    p = load_published(src)
    shrink = None
    if base is not None:
        from .shrink import estimate_shrink

        shrink = estimate_shrink(base, p.trainable[EMBED], p.trainable[LM_HEAD], p.seg_index)
    config, state = head_state(p)
    config.contract = published_contract(embedding_shrink=shrink if shrink is not None else 1.0)
    config.extra = {"converted_from": {"file": src.name, "bytes": src.stat().st_size, "seg_index": p.seg_index,
                                       **{k: v for k, v in p.metadata.items() if isinstance(v, (int, float, str))}}}
    head = DetectureHead(config)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    with atomic_dir(out) as tmp:  # all or nothing; a full disk is reported as the OSError it is
        head.write_into(tmp)
        write_adapter(p, tmp / ADAPTER_DIR)
    return out, shrink
