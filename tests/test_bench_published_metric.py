"""Matched mIoU as the published benchmark defines it: every *emitted* channel is a predicted region, so one that
wins no pixel is Hungarian-matched like any other (IoU 0) and counts in K_pred; padding channels are not emitted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from detecture.benchmark.metrics import MISSING_LOGIT, emitted_channels, pad_logits, partition
from detecture.benchmark.scoring import score_logits


def published_scores(logits: np.ndarray, k_emitted: int, gt_masks: np.ndarray) -> tuple[float, float, int]:
    """Reference: binary masks of argmax == i for each emitted channel i (empty ones included), best injective
    matching by brute force on mask IoUs, mean over matched pairs; panoptic = sum / max(K_pred, K_gt)."""
    labels = np.argmax(np.concatenate([np.zeros((1, *logits.shape[1:])), logits]), axis=0)
    preds = [labels == i for i in range(1, k_emitted + 1)]
    gts = [m for m in gt_masks if m.any()]

    def iou(a, b):
        union = (a | b).sum()
        return (a & b).sum() / union if union else 0.0

    best, pairs = -1.0, min(len(preds), len(gts))
    for chosen in itertools.permutations(range(len(preds)), pairs) if len(preds) >= len(gts) else []:
        best = max(best, sum(iou(preds[p], gts[g]) for g, p in enumerate(chosen)))
    for chosen in itertools.permutations(range(len(gts)), pairs) if len(preds) < len(gts) else []:
        best = max(best, sum(iou(preds[p], gts[g]) for p, g in enumerate(chosen)))
    return best / pairs, best / max(len(preds), len(gts)), len(preds)


def test_an_emitted_channel_that_wins_nothing_is_matched_with_iou_zero():
    gt = np.zeros((2, 4, 6), bool)
    gt[0, :, :3] = True
    gt[1, :, 3:] = True
    logits = np.full((2, 4, 6), -1.0, np.float32)
    logits[0] = 2.0  # channel 1 takes the whole image; channel 2 is emitted but never wins a pixel
    score, labels = score_logits(logits, gt)
    assert not (labels == 2).any()
    assert score.k_pred == 2 and score.k_correct == 1.0
    assert score.miou == pytest.approx(0.25)  # (0.5 + 0) / 2, not 0.5 / 1
    assert score.panoptic_iou == pytest.approx(0.25)


def test_padding_channels_are_not_emitted():
    logits = pad_logits(np.ones((1, 3, 3), np.float32), 3)
    assert emitted_channels(logits) == 1 and emitted_channels(np.full((2, 2, 2), MISSING_LOGIT)) == 0


def test_equals_the_published_definition_on_random_partitions():
    rng = np.random.default_rng(7)
    for _ in range(30):
        k_gt, k = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        gt_labels = np.kron(rng.integers(0, k_gt + 1, (4, 4)), np.ones((3, 3), int))
        gt = np.stack([gt_labels == j for j in range(1, k_gt + 1)])
        logits = np.kron(rng.normal(size=(k, 4, 4)), np.ones((1, 3, 3))).astype(np.float32)
        logits[rng.integers(0, k)] -= 10 * rng.integers(0, 2)  # sometimes a channel that wins nothing
        if not gt.any():
            continue
        score, _ = score_logits(logits, gt)
        assert np.array_equal(partition(logits), np.argmax(np.concatenate([np.zeros((1, 12, 12)), logits]), 0))
        miou, panoptic, k_pred = published_scores(logits, k, gt)
        assert (score.miou, score.panoptic_iou, score.k_pred) == (pytest.approx(miou), pytest.approx(panoptic),
                                                                 k_pred)
