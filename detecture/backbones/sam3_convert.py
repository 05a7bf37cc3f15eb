"""Convert a Meta-format SAM3 checkpoint (``sam3.pt`` of the ``sam3`` package) into a ``Sam3Model`` folder.

The published Detecture head was trained on tensors from Meta's implementation; Detecture runs ``transformers``'
``Sam3Model``. Converting Meta's own file (instead of trusting a hub copy) lets a user run the published head on
exactly the weights it was trained against. The key mapping is data (``sam3_meta_keys.yaml``, naming its source);
this module applies it strictly: every image-model key must land on a ``Sam3Model`` parameter or be listed as
dropped, and every ``Sam3Model`` parameter must be filled, or the conversion fails listing the offenders, because a
silently skipped tensor is a silently different model.

The output folder holds ``config.json`` + ``model.safetensors`` (what ``Sam3Model.from_pretrained`` reads) and a CLIP
tokenizer (what ``Sam3Backbone.from_pretrained`` reads for text prompts). The tokenizer comes from CLIP's BPE merge
list ``bpe_simple_vocab_16e6.txt.gz`` (the file Meta's builder wants; the ``sam3`` 0.1.4 wheel does not ship it,
``open_clip_torch``'s wheel does, as ``open_clip/bpe_simple_vocab_16e6.txt.gz``) or from an existing tokenizer folder.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping

import torch
import yaml

from ..errors import InputError
from ..utils.torch_files import load_checkpoint, tensor_dict

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_CONTEXT = 32  # SAM3's text context length
CLIP_MERGES = 49152 - 256 - 2  # merges CLIP keeps from the BPE file (vocab 49408 = 256 bytes x 2 + merges + 2)


@lru_cache(maxsize=1)
def key_layout() -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath("sam3_meta_keys.yaml").read_text(encoding="utf-8"))


@dataclass
class Converted:
    state_dict: dict[str, torch.Tensor]
    dropped: list[str]  # Meta keys intentionally not carried (recomputed or not part of Sam3Model)
    tracker_keys: int  # video-tracker keys skipped


def image_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """The image-model part of a Meta checkpoint: keys under ``detector.`` (prefix removed), tracker keys counted and
    skipped. A bare image-model state dict (no ``detector.`` keys, e.g. ``Sam3Image.state_dict()``) is taken as is;
    a checkpoint's ``model`` wrapper is removed by :func:`load_meta_checkpoint`."""
    layout = key_layout()
    prefix, tracker = layout["image_prefix"], tuple(layout["tracker_prefixes"])
    tracker_keys = sum(1 for k in checkpoint if k.startswith(tracker))
    if any(k.startswith(prefix) for k in checkpoint):
        return {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}, tracker_keys
    return {k: v for k, v in checkpoint.items() if not k.startswith(tracker)}, tracker_keys


def rename(key: str) -> str:
    for pattern, replacement in key_layout()["rules"]:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(checkpoint: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                       source: str | Path = "SAM3 checkpoint") -> Converted:
    """Map Meta's names and layouts onto ``target`` (a ``Sam3Model`` state dict, shapes only are read).

    Raises :class:`InputError` naming ``source`` (the file) and the unmapped, unfilled or mis-shaped keys.
    """
    layout = key_layout()
    image, tracker_keys = image_state_dict(checkpoint)
    dropped_re = [re.compile(p) for p in layout["dropped"]]
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in image.items():
        new = rename(key)
        if any(r.search(key) or r.search(new) for r in dropped_re):
            dropped.append(key)
            continue
        for parts in _split(new, value, layout["split_qkv"]):
            name, tensor = parts
            if name in layout["transpose"]:
                tensor = tensor.t()
            if name in layout["strip_cls"] and name in target and tensor.shape[-2] == target[name].shape[-2] + 1:
                tensor = tensor[..., 1:, :]
            if name not in target:
                unknown.append(f"{key} -> {name}")
                continue
            if tuple(tensor.shape) != tuple(target[name].shape):
                raise InputError(f"{source}: SAM3 key {key} -> {name}: shape {tuple(tensor.shape)}, Sam3Model expects "
                                 f"{tuple(target[name].shape)} (a checkpoint of another SAM3 size?)")
            out[name] = tensor.contiguous()
    missing = sorted(set(target) - set(out))
    if unknown or missing:
        raise InputError(f"{source}: does not match Sam3Model: {len(unknown)} unmapped keys {unknown[:5]}, "
                         f"{len(missing)} unfilled parameters {missing[:5]}")
    return Converted(out, dropped, tracker_keys)


def _split(name: str, tensor: torch.Tensor, fused: list[str]) -> list[tuple[str, torch.Tensor]]:
    """A fused q/k/v projection becomes three (``.qkv.weight`` -> ``.q_proj.weight`` ...; ``.in_proj_bias`` ->
    ``.q_proj.bias`` ...); anything else passes through."""
    for marker in fused:
        if marker in name:
            q, k, v = torch.chunk(tensor, 3, dim=0)
            if marker.endswith("_"):  # in_proj_weight / in_proj_bias
                head, tail = name.split(marker)
                return [(f"{head}.{p}_proj.{tail}", t) for p, t in zip("qkv", (q, k, v))]
            return [(name.replace(marker, f".{p}_proj."), t) for p, t in zip("qkv", (q, k, v))]
    return [(name, tensor)]


def target_shapes(config) -> dict[str, torch.Tensor]:
    """Parameter and persistent-buffer shapes of ``Sam3Model(config)``, built on the meta device (no memory)."""
    from transformers import Sam3Model

    with torch.device("meta"):
        model = Sam3Model(config)
    return model.state_dict()


def load_meta_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Meta's state dict from ``path`` (read safely, :mod:`detecture.utils.torch_files`), under its ``model`` key or
    bare; one :class:`InputError` naming the file unless it maps parameter names to tensors."""
    raw = load_checkpoint(path, "sam3.pt", "Meta's SAM3 checkpoint: hf download facebook/sam3 sam3.pt")
    state = raw["model"] if isinstance(raw, dict) and isinstance(raw.get("model"), dict) else raw
    return tensor_dict(path, state, "the SAM3 checkpoint")


def find_bpe() -> Path | None:
    """CLIP's BPE merge list from an installed package: Meta's ``sam3`` (assets/) or ``open_clip_torch``."""
    for package, parts in (("sam3", ("assets", BPE_FILE)), ("sam3", ("..", "assets", BPE_FILE)),
                           ("open_clip", (BPE_FILE,))):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            candidate = Path(root).joinpath(*parts).resolve()
            if candidate.is_file():
                return candidate
    return None


def missing_bpe_message() -> str:
    return (f"CLIP's {BPE_FILE} was not found (the sam3 0.1.4 wheel does not ship it). Get it from open_clip_torch's "
            f"wheel: pip download --no-deps open_clip_torch, then unzip open_clip/{BPE_FILE}; pass it with --bpe, "
            "or pass --tokenizer with a SAM3/CLIP tokenizer folder")


def clip_tokenizer_from_bpe(bpe_path: Path):
    """A ``CLIPTokenizer`` equal to CLIP's own: 256 byte tokens, the same with ``</w>``, the first 48,894 merges,
    then ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 ids), as CLIP's reference tokenizer builds it."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    try:
        lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{bpe_path}: not a gzipped BPE merge list ({exc})") from None
    merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1] if line.strip()]
    if not merges or any(len(m) != 2 for m in merges):
        raise InputError(f"{bpe_path}: not a BPE merge list (expected lines of two symbols after a header line)")
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>",
                                                                                      "<|endoftext|>"]
    # checked here because the tokenizers library reports it as a bare Exception, indistinguishable from its bugs
    known = set(vocab)
    for line, merge in enumerate(merges, start=2):
        if not set(merge) <= known:
            raise InputError(f"{bpe_path}: line {line}: merge {' '.join(merge)!r} uses a token that is not in the "
                             "vocabulary (byte symbols and merge results) it defines; not CLIP's BPE merge list")
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges, pad_token="<|endoftext|>",
                         model_max_length=CLIP_CONTEXT)


def convert(checkpoint: str | Path, out: str | Path, *, bpe: str | Path | None = None,
            tokenizer: str | Path | None = None, config=None) -> tuple[Path, Converted]:
    """Write a ``Sam3Model`` folder converted from Meta's ``checkpoint`` (never modified) to ``out`` (must not
    exist). The tokenizer comes from ``tokenizer`` (a folder) or ``bpe`` (CLIP's merge list; found in installed
    packages when omitted)."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Sam3Config

    from ..utils.atomic import atomic_dir

    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose a new --out folder")
    if tokenizer is not None:
        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as exc:
            raise InputError(f"{tokenizer}: not a tokenizer folder ({exc})") from None
    else:
        bpe_path = Path(bpe) if bpe is not None else find_bpe()
        if bpe_path is None or not bpe_path.is_file():
            raise InputError(missing_bpe_message() if bpe is None else f"{bpe}: no such file")
        tok = clip_tokenizer_from_bpe(bpe_path)
    config = config if config is not None else Sam3Config()
    config.vision_config.backbone_config.layer_norm_eps = float(key_layout()["vit_layer_norm_eps"])
    converted = convert_state_dict(load_meta_checkpoint(checkpoint), target_shapes(config), checkpoint)
    config.architectures = ["Sam3Model"]
    with atomic_dir(out) as tmp:
        config.save_pretrained(tmp)
        save_file(converted.state_dict, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)
    return out, converted
