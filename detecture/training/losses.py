"""Training losses (docs/ARCHITECTURE.md, Training): Shifted-Zero weighted LM loss and the Hungarian-matched mask loss.

Each term is a small function of plain tensors so it can be tested on hand-built inputs, independent of the models.
Every term is a mean over the micro-batch's samples of that sample's own loss (its weighted tokens, its pixels, its
matched regions), never a mean over tokens or regions pooled across samples: the loop weights each micro-batch by its
share of the accumulation group's samples, so a step's gradient is then the same however the samples are grouped
into micro-batches (batch 2 x accumulation 4 = batch 8), and a sample with few regions or a short response is not
weighed by what it happens to be batched with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

NEG_INF = -1e4  # logit given to dead (PAD) slots: exp() underflows to 0 in fp32 and bf16 alike


def shifted_zero_weights(
    input_ids: torch.Tensor,
    seg_token_id: int,
    assistant_start: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    alpha: float = 2.0,
) -> torch.Tensor:
    """Per-token LM weights (B, T); ``w[t]`` weighs the loss of *predicting* token ``t`` (from position ``t-1``).

    ``w = 1 - exp(-alpha * d)`` with ``d`` the distance to the nearest ``<|seg|>`` among the assistant tokens, so the
    description words right next to a SEG (which the mask loss shapes anyway) count less. Then

    * ``w[seg] = 1``: predicting SEG itself is what makes generation emit it; giving it weight 0 (the classic
      off-by-one) lets the loss fall while SEG is never emitted;
    * ``w[seg + 1] = 0`` (if it exists): that token is predicted *from the SEG hidden state*, which must stay free
      for the mask loss.

    Non-assistant tokens (system, image, user) and padding get 0. A ``<|seg|>`` inside the prompt is ignored.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got {tuple(input_ids.shape)}")
    b, t = input_ids.shape
    device = input_ids.device
    pos = torch.arange(t, device=device)
    assistant = pos[None, :] >= assistant_start.to(device)[:, None]
    if attention_mask is not None:
        assistant = assistant & attention_mask.bool()
    is_seg = (input_ids == seg_token_id) & assistant
    # distance from every position to every SEG position of its row; rows without SEG get d = inf (w = 1)
    dist = (pos[None, :, None] - pos[None, None, :]).abs().float().expand(b, t, t)
    dist = dist.masked_fill(~is_seg[:, None, :], float("inf"))
    d = dist.min(dim=2).values
    w = 1.0 - torch.exp(-alpha * d)
    w = torch.where(is_seg, torch.ones_like(w), w)
    after_seg = torch.zeros_like(is_seg)
    after_seg[:, 1:] = is_seg[:, :-1]  # bounds-checked: a SEG at the last position has no successor
    w = torch.where(after_seg, torch.zeros_like(w), w)
    return w * assistant.float()


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted next-token cross-entropy: logits at ``t-1`` predict ``input_ids[t]`` with weight ``weights[t]``; each
    sample's weighted mean over its own tokens, then the mean over samples (see the module docstring).

    Computed in fp32 (bf16 log-softmax over a 152k vocabulary loses the small differences the weights encode).
    A sample whose weights are all 0 contributes 0 (with a graph), so one without assistant tokens cannot produce NaN.
    """
    shift_logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    w = weights[:, 1:].to(shift_logits.dtype)
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), targets.reshape(-1),
                         reduction="none").view_as(w)
    return ((ce * w).sum(1) / w.sum(1).clamp_min(1e-8)).mean()


@dataclass(frozen=True)
class MaskTargets:
    """Per-pixel channel targets after matching: ``labels`` (B, H, W) in 0..6 (0 = dustbin) and the matched pairs."""

    labels: torch.Tensor
    matches: list[list[tuple[int, int]]]  # per sample: (slot channel 1..6, GT region index 0..K-1)


def soft_dice(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - Dice`` between probability maps and binary targets over the trailing two dims (smoothed by ``eps``)."""
    inter = (prob * target).flatten(-2).sum(-1)
    total = prob.flatten(-2).sum(-1) + target.flatten(-2).sum(-1)
    return 1.0 - (2.0 * inter + eps) / (total + eps)


def live_probabilities(logits: torch.Tensor, slot_mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the live channels only (dustbin + K SEG slots); PAD slots get probability 0."""
    masked = logits.float().masked_fill(~slot_mask.bool()[:, :, None, None], NEG_INF)
    return masked.softmax(dim=1)


@torch.no_grad()
def match_slots(prob: torch.Tensor, slot_mask: torch.Tensor, gt_masks: list[torch.Tensor]) -> MaskTargets:
    """Hungarian-match live SEG slots to GT regions by Dice cost; build the per-pixel channel target.

    Matching (not "slot k = region k") keeps the loss correct when the response order and the mask order differ and
    makes the same loss usable on generated responses, whose lines need not follow the GT order. GT pixels of an
    unmatched region and uncovered pixels target the dustbin; where GT masks overlap the first one wins.
    """
    b, _, h, w = prob.shape
    labels = torch.zeros(b, h, w, dtype=torch.long, device=prob.device)
    matches: list[list[tuple[int, int]]] = []
    for i in range(b):
        slots = torch.nonzero(slot_mask[i, 1:]).flatten() + 1
        gt = gt_masks[i].to(prob.device).float()
        pairs: list[tuple[int, int]] = []
        if len(slots) and gt.shape[0]:
            cost = soft_dice(prob[i, slots][:, None], gt[None]).cpu().numpy()
            rows, cols = linear_sum_assignment(np.nan_to_num(cost, nan=1.0))
            pairs = sorted((int(slots[r]), int(c)) for r, c in zip(rows, cols))
            for channel, region in reversed(sorted(pairs, key=lambda p: p[1])):
                labels[i][gt[region].bool()] = channel  # reversed: the lowest region index is written last and wins
        matches.append(pairs)
    return MaskTargets(labels=labels, matches=matches)


def mask_ce_loss(logits: torch.Tensor, slot_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy over the live softmax channels (dustbin + K): each sample's mean over its pixels, then
    the mean over samples."""
    masked = logits.float().masked_fill(~slot_mask.bool()[:, :, None, None], NEG_INF)
    return F.cross_entropy(masked, labels, reduction="none").flatten(1).mean(1).mean()


def mask_dice_loss(prob: torch.Tensor, targets: MaskTargets, gt_masks: list[torch.Tensor]) -> torch.Tensor:
    """``1 - Dice``: each sample's mean over its own matched (slot, region) pairs, then the mean over samples; a
    sample without a match contributes 0 (and still counts as a sample, so the mean does not depend on its batch)."""
    per_sample = [
        torch.stack([soft_dice(prob[i, channel], gt_masks[i][region].to(prob.device).float())
                     for channel, region in pairs]).mean() if pairs else prob[i].sum() * 0.0
        for i, pairs in enumerate(targets.matches)
    ]
    return torch.stack(per_sample).mean()


@dataclass
class LossTerms:
    total: torch.Tensor
    mask_ce: torch.Tensor
    mask_dice: torch.Tensor
    lm: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items()}


def mask_loss(
    logits: torch.Tensor,
    slot_mask: torch.Tensor,
    gt_masks: list[torch.Tensor],
    ce_weight: float = 1.0,
    dice_weight: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor, MaskTargets]:
    """Hungarian-matched mask loss; returns (CE, Dice, targets). ``logits`` are upsampled to the GT mask size."""
    size = gt_masks[0].shape[-2:]
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    prob = live_probabilities(logits, slot_mask)
    targets = match_slots(prob, slot_mask, gt_masks)
    ce = mask_ce_loss(logits, slot_mask, targets.labels)
    dice = mask_dice_loss(prob, targets, gt_masks)
    return ce_weight * ce, dice_weight * dice, targets


def total_loss(mask_ce: torch.Tensor, mask_dice: torch.Tensor, lm: torch.Tensor, lm_weight: float) -> LossTerms:
    """total = (weighted CE + weighted Dice) + lm_weight × LM (docs/ARCHITECTURE.md, Training)."""
    return LossTerms(total=mask_ce + mask_dice + lm_weight * lm, mask_ce=mask_ce, mask_dice=mask_dice, lm=lm)
