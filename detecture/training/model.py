"""The training forward pass: backbones + head in one ``nn.Module`` so DDP/accelerate wrap a single model.

Stage 1 (only the head trains): Qwen runs under ``no_grad`` with the same KV-cached decoupled re-encode inference
uses, and the LM loss is not computed (nothing it could train is active). Stage 2 (LoRA + SEG rows too): one Qwen pass
over ``prefix + suffix + suffix'`` gives both the causal LM logits (from ``suffix``) and the decoupled SEG states
(from the copy ``suffix'``, which sees the prefix and its own line only). One pass means one vision encode, one
prefix computation and a graph that gradient checkpointing can handle (a KV cache cannot be used under checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones.loading import attention_implementation
from ..backbones.qwen import QwenVL
from ..backbones.sam3 import Sam3Backbone
from ..bridge.head import DetectureHead
from ..reencode import (
    decoupled_attention_mask,
    line_ids,
    line_local_positions,
    rope_positions,
    seg_states,
    suffix_hidden_states,
)
from .config import LossConfig
from .losses import NEG_INF, LossTerms, lm_loss, mask_loss, shifted_zero_weights, total_loss


@dataclass
class Batch:
    """One micro-batch. Exactly one of ``qwen_inputs`` / ``seg_states`` and of ``pixel_values`` / ``vision`` is set
    (the second of each pair comes from the stage-1 feature cache)."""

    ids: list[str]
    masks: list[torch.Tensor]  # per sample (K_i, S, S) bool, region k ↔ the k-th SEG of the response
    counts: list[int]
    qwen_inputs: dict | None = None
    seg_states: list[torch.Tensor] | None = None
    pixel_values: torch.Tensor | None = None
    vision: object | None = None

    def to(self, device: torch.device) -> "Batch":
        def move(x):
            return x.to(device) if x is not None else None

        return Batch(
            ids=self.ids,
            masks=[m.to(device) for m in self.masks],
            counts=self.counts,
            qwen_inputs=move(self.qwen_inputs),
            seg_states=[s.to(device) for s in self.seg_states] if self.seg_states is not None else None,
            pixel_values=move(self.pixel_values),
            vision=_move_vision(self.vision, device),
        )


def _move_vision(vision, device: torch.device):
    if vision is None:
        return None
    return type(vision)(
        last_hidden_state=vision.last_hidden_state.to(device),
        fpn_hidden_states=tuple(f.to(device) for f in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(p.to(device) for p in vision.fpn_position_encoding),
    )


def teacher_forced_pass(qwen: QwenVL, inputs, positions_mode: str = "line_local") -> tuple[torch.Tensor, torch.Tensor]:
    """LM logits for the suffix and decoupled last-layer suffix hidden states, from one Qwen pass.

    Returns ``(logits (B, S + 1, V), hidden (B, S, H))``: ``logits[:, j]`` is computed at sequence position
    ``prefix_length - 1 + j`` and predicts token ``prefix_length + j``; ``hidden`` equals
    :func:`detecture.reencode.suffix_hidden_states` with ``decoupled=True`` (same mask, same positions mode).
    """
    p = int(inputs["prefix_length"])
    ids, am = inputs["input_ids"], inputs["attention_mask"]
    suffix = ids[:, p:]
    s = suffix.shape[1]
    positions = rope_positions(qwen, ids, am, inputs["image_grid_thw"])
    lines = line_ids(suffix, qwen.seg_token_id)
    dtype = qwen.dtype
    causal = decoupled_attention_mask(am[:, :p], am[:, p:], torch.zeros_like(lines), dtype, include_prefix_rows=True)
    decoupled = decoupled_attention_mask(am[:, :p], am[:, p:], lines, dtype)
    mask = torch.full((ids.shape[0], 1, p + 2 * s, p + 2 * s), torch.finfo(dtype).min, dtype=dtype, device=ids.device)
    mask[:, :, : p + s, : p + s] = causal
    mask[:, :, p + s :, :p] = decoupled[..., :p]
    mask[:, :, p + s :, p + s :] = decoupled[..., p:]
    all_ids = torch.cat([ids, suffix], dim=1)
    copy_positions = (line_local_positions(positions[:, :, p:], lines) if positions_mode == "line_local"
                      else positions[:, :, p:])
    with attention_implementation(qwen.model, "sdpa"):
        out = qwen.core(
            input_ids=all_ids,
            attention_mask=mask,
            position_ids=torch.cat([positions, copy_positions], dim=2),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=(all_ids == qwen.image_token_id).int(),
            use_cache=False,
        )
    hidden = out.last_hidden_state
    logits = qwen.model.get_output_embeddings()(hidden[:, p - 1 : p + s])
    return logits, hidden[:, p + s :]


class TrainModule(nn.Module):
    """Frozen Qwen (PEFT-wrapped) + frozen SAM3 + trainable head; ``forward(batch, stage)`` returns the loss terms."""

    def __init__(self, qwen: QwenVL, sam3: Sam3Backbone, head: DetectureHead, loss: LossConfig) -> None:
        super().__init__()
        self.qwen_model = qwen.model  # registered so .to(), DDP and named_parameters() see it
        self.sam_model = sam3.model
        self.head = head
        self.qwen, self.sam3, self.loss_cfg = qwen, sam3, loss
        self.contract = head.config.effective_contract  # what the head trains under, as it will be run

    def seg_states_frozen(self, inputs, counts: list[int]) -> list[torch.Tensor]:
        """SEG states with Qwen frozen: the inference re-encode (prefix KV cache + decoupled suffix)."""
        with torch.no_grad():
            hidden = suffix_hidden_states(self.qwen, inputs, decoupled=True, use_cache=True,
                                          positions_mode=self.contract.positions)
            return [s.detach() for s in seg_states(self.qwen, inputs, hidden, counts)]

    def slot_logits(self, states: list[torch.Tensor], vision) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 7, h, w) slot logits [DUSTBIN, SEG_1..K, PAD] (dead slots at -1e4) and the live-slot mask (B, 7)."""
        prompts, live = self.head.slot_prompts(states, self.sam3.model.text_projection)
        pixels = self.sam3.pixel_embeddings(vision, prompts[:, None, :], None, live.nonzero()[:, 0])
        flat = self.head.mask_head(prompts, pixels).float()
        logits = flat.new_full((*live.shape, *flat.shape[-2:]), NEG_INF)
        logits[live] = flat
        return logits, live

    def forward(self, batch: Batch, stage: int) -> LossTerms:
        lm = None
        if batch.seg_states is not None:
            states = batch.seg_states
        elif stage == 1:
            states = self.seg_states_frozen(batch.qwen_inputs, batch.counts)
        else:
            inputs = batch.qwen_inputs
            logits, hidden = teacher_forced_pass(self.qwen, inputs, self.contract.positions)
            states = seg_states(self.qwen, inputs, hidden, batch.counts)
            p = int(inputs["prefix_length"])
            weights = shifted_zero_weights(
                inputs["input_ids"], self.qwen.seg_token_id, torch.full_like(inputs["input_ids"][:, 0], p),
                inputs["attention_mask"], alpha=self.loss_cfg.shifted_zero_alpha,
            )
            lm = lm_loss(logits, inputs["input_ids"][:, p - 1 :], weights[:, p - 1 :])
        if batch.vision is not None:
            vision = batch.vision
        else:
            with torch.no_grad():
                vision = self.sam3.vision_features(batch.pixel_values)
        logits, live = self.slot_logits(states, vision)
        ce, dice, _ = mask_loss(logits, live, batch.masks, self.loss_cfg.ce_weight, self.loss_cfg.dice_weight)
        if lm is None:
            lm = ce.new_zeros(())
        return total_loss(ce, dice, lm, self.loss_cfg.lm_weight)
