"""The trainable surface: Bridge + dustbin + mask head, Qwen LoRA, and the ``<|seg|>`` rows.

What each stage trains and why is described in docs/ARCHITECTURE.md, Training.

The ``<|seg|>`` input-embedding and lm_head rows are trained through PEFT's trainable-token support: PEFT keeps a
(1, H) delta parameter per matrix and writes it into the row at forward time, so AdamW state exists for two rows
instead of two 152k × 4096 matrices (the published full-tensor gradient mask cost ~5 GB of optimizer state). With
tied embeddings (Qwen3-VL 2B/4B) only ``embed_tokens`` is listed: PEFT ties the lm_head adapter to it. The rows are
warm-started from ``<|im_end|>`` by :func:`detecture.backbones.tokens.add_seg_token` before PEFT copies them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..backbones.qwen import QwenVL
from ..utils.optional import peft_for
from .config import GROUPS, LoraConfig, OptimConfig

log = logging.getLogger(__name__)


def embeddings_tied(model: nn.Module) -> bool:
    """True when the lm_head shares its weight tensor with the input embedding."""
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def apply_lora(qwen: QwenVL, cfg: LoraConfig, quantized: bool = False, gradient_checkpointing: bool = True) -> None:
    """Wrap ``qwen.model`` in a PEFT model: LoRA on the *language model's* target projections + SEG-row adapters.

    The target regex is anchored to ``language_model`` so a vision-tower module with the same short name can never be
    adapted by accident. For a quantised base, PEFT's k-bit preparation (fp32 norms, input grads) is applied first.
    """
    model = qwen.model
    with peft_for(quantized) as peft:
        if quantized:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        rows = {"embed_tokens": [qwen.seg_token_id]}
        if not embeddings_tied(model):
            rows["lm_head"] = [qwen.seg_token_id]
        targets = "|".join(cfg.target_modules)
        peft_cfg = peft.LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=rf".*language_model.*\.({targets})",
            trainable_token_indices=rows,
        )
        qwen.model = peft.get_peft_model(model, peft_cfg)


def load_adapter_weights(qwen: QwenVL, adapter: Path, cfg: LoraConfig) -> None:
    """Start the PEFT-wrapped Qwen from a saved adapter (``detecture train --init``): its LoRA and ``<|seg|>`` rows.

    The adapter must have the configured rank and alpha and train this tokenizer's ``<|seg|>`` row; every tensor
    must land on a parameter (an unmatched key would silently start that part from scratch).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..errors import CheckpointError
    from ..utils.adapter_files import WEIGHTS_FILE, read_adapter_config

    saved, weights = read_adapter_config(adapter), adapter / WEIGHTS_FILE
    if (saved.get("r"), saved.get("lora_alpha")) != (cfg.r, cfg.alpha):
        raise CheckpointError(f"{adapter}: adapter has LoRA r={saved.get('r')}, alpha={saved.get('lora_alpha')} but "
                              f"training is configured for r={cfg.r}, alpha={cfg.alpha}; pass "
                              f"--set lora.r={saved.get('r')} --set lora.alpha={saved.get('lora_alpha')}")
    rows = saved.get("trainable_token_indices") or {}
    if any(list(ids) != [qwen.seg_token_id] for ids in rows.values()):
        raise CheckpointError(f"{adapter}: adapter trains token rows {rows}, but this tokenizer's <|seg|> id is "
                              f"{qwen.seg_token_id}")
    result = set_peft_model_state_dict(qwen.model, load_file(str(weights)))
    if result.unexpected_keys:
        raise CheckpointError(f"{adapter}: adapter tensors that match no parameter: {sorted(result.unexpected_keys)}")


def group_of(name: str) -> str | None:
    """Schedule group of a trainable parameter name, or None for a name that should not be trainable."""
    if "trainable_tokens_delta" in name:
        return "seg_rows"
    if "lora_" in name:
        return "lora"
    if name.startswith("head."):
        return "head"
    return None


def _decays(name: str, p: nn.Parameter) -> bool:
    """Weight decay on matrices only: not on biases, norms, the dustbin vector or the SEG rows."""
    return p.ndim >= 2 and "trainable_tokens_delta" not in name


@dataclass
class ParamGroups:
    """Trainable parameters by schedule group, as AdamW parameter groups (each carrying ``"name"``)."""

    groups: list[dict]

    @property
    def by_group(self) -> dict[str, list[nn.Parameter]]:
        out: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
        for group in self.groups:
            out[group["name"]].extend(group["params"])
        return out


def param_groups(module: nn.Module, weight_decay: float) -> ParamGroups:
    """Split ``module``'s trainable parameters into (group × decay) AdamW groups in a fixed, name-sorted order.

    Any trainable parameter outside the three groups is a bug (e.g. a backbone left unfrozen), so it raises.
    """
    buckets: dict[tuple[str, bool], list[tuple[str, nn.Parameter]]] = {}
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad:
            continue
        group = group_of(name)
        if group is None:
            raise RuntimeError(f"parameter {name} is trainable but belongs to no training group")
        buckets.setdefault((group, _decays(name, p)), []).append((name, p))
    groups = []
    for group in GROUPS:
        for decay in (True, False):
            members = buckets.get((group, decay), [])
            if not members:
                continue
            groups.append({"name": group, "params": [p for _, p in members],
                           "weight_decay": weight_decay if decay else 0.0})
    return ParamGroups(groups=groups)


def build_optimizer(groups: ParamGroups, optim: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups.groups, lr=optim.lr, betas=tuple(optim.betas))


def parameter_table(groups: ParamGroups, optim: OptimConfig, frozen: int) -> str:
    """Human-readable table of trainable parameters by group, with each stage's lr scale."""
    lines = [f"{'group':<10} {'tensors':>8} {'params':>12} {'lr stage 1':>11} {'lr stage 2':>11}"]
    total = 0
    for group, params in groups.by_group.items():
        n = sum(p.numel() for p in params)
        total += n
        s1 = optim.lr * optim.stage1_scales.get(group, 0.0)
        s2 = optim.lr * optim.stage2_scales.get(group, 0.0)
        lines.append(f"{group:<10} {len(params):>8} {n:>12,} {s1:>11.2e} {s2:>11.2e}")
    lines.append(f"{'trainable':<10} {'':>8} {total:>12,}")
    lines.append(f"{'frozen':<10} {'':>8} {frozen:>12,}")
    return "\n".join(lines)
