"""How much a training run's weight decay shrank the frozen rows of the embedding matrices.

The published trainer put the *full* input-embedding and LM-head matrices in an AdamW group with weight decay and
masked every gradient row but ``<|seg|>``'s; decoupled decay still multiplied every row by (1 - lr * wd) each step.
The model it evaluated therefore had every other row scaled by one common factor. Conversion ships only the
``<|seg|>`` rows, so inference rebuilds the others from the base model times that factor, estimated here as the
least-squares scale between a sample of published rows and the same base rows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import InputError

log = logging.getLogger(__name__)

BASE_NAMES = {"embed": "model.language_model.embed_tokens.weight", "lm_head": "lm_head.weight"}
SAMPLE_ROWS = 64
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def _base_file(base: str, name: str) -> Path:
    """Local safetensors file holding tensor ``name`` of a base model (folder or hub id, downloaded if needed)."""
    folder = Path(base)
    if folder.is_dir():
        def fetch(filename: str) -> Path:
            return folder / filename
    else:
        from huggingface_hub import hf_hub_download

        def fetch(filename: str) -> Path:
            return Path(hf_hub_download(base, filename))
    try:
        index = fetch(INDEX)
        if index.is_file():
            shard = json.loads(index.read_text())["weight_map"].get(name)
            if shard is None:
                raise InputError(f"{base}: base model has no tensor {name}")
            return fetch(shard)
    except (OSError, ValueError) as exc:  # hub: no index file (single-file model) or no access
        log.debug("no safetensors index for %s (%s)", base, exc)
    single = fetch(SINGLE)
    if not single.is_file():
        raise InputError(f"{base}: no {INDEX} or {SINGLE} found; pass a Qwen3-VL model folder or hub id")
    return single


def _rows(base: str, name: str, rows: list[int]) -> torch.Tensor:
    with safe_open(str(_base_file(base, name)), framework="pt") as f:
        if name not in f.keys():
            raise InputError(f"{base}: base model has no tensor {name}")
        matrix = f.get_slice(name)
        return torch.stack([matrix[r] for r in rows])


def sample_rows(vocab: int, seg_index: int, count: int = SAMPLE_ROWS) -> list[int]:
    """Evenly spread ordinary token rows (never ``<|seg|>``)."""
    step = max(1, (vocab - 1) // count)
    return [r for r in range(0, vocab - 1, step) if r != seg_index][:count]


def estimate_shrink(base: str, embed: torch.Tensor, lm_head: torch.Tensor, seg_index: int) -> float:
    """Least-squares factor s with published ≈ s · base over sampled non-SEG rows of both matrices; logs each."""
    rows = sample_rows(min(embed.shape[0], lm_head.shape[0]), seg_index)
    factors = {}
    for key, published in (("embed", embed), ("lm_head", lm_head)):
        ours = _rows(base, BASE_NAMES[key], rows).double()
        theirs = published[rows].double()
        if ours.shape != theirs.shape:
            raise InputError(f"{base}: base {BASE_NAMES[key]} rows have width {ours.shape[1]}, the checkpoint "
                             f"{theirs.shape[1]}; --qwen must be the model the checkpoint was trained from")
        factors[key] = float((ours * theirs).sum() / (ours * ours).sum())
        log.info("%s: non-SEG rows = %.6f x base rows", key, factors[key])
    shrink = (factors["embed"] + factors["lm_head"]) / 2
    if abs(factors["embed"] - factors["lm_head"]) > 1e-2 * shrink or not 0.5 < shrink < 1.05:
        log.warning("shrink factors embed %.4f / lm_head %.4f look inconsistent: is --qwen the model the checkpoint "
                    "was trained from?", factors["embed"], factors["lm_head"])
    return shrink
