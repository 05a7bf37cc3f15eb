"""The one scoring code path for every method (docs/ARCHITECTURE.md, Benchmark protocol).

Every method hands in K logit maps. A static dustbin plane at logit 0 is appended and the argmax taken, so a pixel is
"unassigned" (label 0) unless some region logit is > 0; softmax is monotone, so the argmax of the softmax equals the
argmax of the logits and the softmax itself is never materialised. All region statistics come from one contingency
table of the (ground-truth label, predicted label) pairs built with ``np.bincount`` — never from K×M mask loops — which
keeps a 1008² map with K ≤ 6 under 20 ms on one core (``perf/bench_metrics.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..utils.image_ops import label_boundaries, partition

MASK_LOGIT = 5.0
MISSING_LOGIT = -1e4
BOUNDARY_TOLERANCE_PX = 2


def mask_logits(masks: np.ndarray) -> np.ndarray:
    """Logits for a mask-only method: a binary mask m becomes 5·(2m − 1) (in = +5, out = −5)."""
    m = np.asarray(masks, dtype=bool)
    return np.where(m, MASK_LOGIT, -MASK_LOGIT).astype(np.float32)


def inverse_mask_logits(mask_logit: np.ndarray) -> np.ndarray:
    """The K = 2 trick for single-prompt methods: one logit map m becomes ``[m, −m]``.

    With the dustbin at 0 every pixel with m ≠ 0 goes to exactly one of the two channels, giving a two-way split.
    """
    m = np.asarray(mask_logit, dtype=np.float32)
    return np.stack([m, -m])


def pad_logits(logits: np.ndarray, k: int) -> np.ndarray:
    """Pad missing channels with −1e4 so a method that found fewer regions than slots never wins those channels."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[0] >= k:
        return logits
    pad = np.full((k - logits.shape[0], *logits.shape[1:]), MISSING_LOGIT, dtype=np.float32)
    return np.concatenate([logits, pad])


def gt_label_map(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) boolean GT masks → (H, W) labels, 0 = uncovered, j = region j (the first mask wins on overlap)."""
    masks = np.asarray(masks, dtype=bool)
    dtype = np.uint8 if masks.shape[0] < 255 else np.int32
    if masks.shape[0] == 0:
        return np.zeros(masks.shape[1:], dtype=dtype)
    first = np.argmax(masks, axis=0).astype(dtype) + 1
    return np.where(masks.any(axis=0), first, 0).astype(dtype)


def scored_regions(gt: np.ndarray, n_masks: int) -> np.ndarray:
    """0-based indices of the ``n_masks`` GT masks that are regions of ``gt``, the label map our scorer builds of them
    (:func:`gt_label_map`, where the first mask wins an overlap): an empty mask, or one entirely under earlier masks,
    is not among them."""
    pixels = np.bincount(gt.ravel(), minlength=n_masks + 1)
    return np.flatnonzero(pixels[1:])


def label_map_notes(masks: np.ndarray, gt: np.ndarray) -> dict[int, str]:
    """Why each GT mask that is no region of ``gt``, our scorer's label map of ``masks``, is left out, by mask index
    (a template naming the mask as ``{mask}``): the user is told which of their masks the score ignores."""
    regions = set(scored_regions(gt, len(masks)).tolist())
    notes = {}
    for i, mask in enumerate(np.asarray(masks, dtype=bool)):
        if not mask.any():
            notes[i] = "empty mask {mask}"
        elif i not in regions:
            notes[i] = ("mask {mask} lies entirely under earlier masks (the first mask wins an overlap), so it is no "
                        "region")
    return notes


def contingency(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(G+1, P+1) table of pixel counts for every (gt label, pred label) pair, labels 0..max included."""
    if gt.shape != pred.shape:
        raise ValueError(f"label maps differ in shape: gt {gt.shape} vs pred {pred.shape}")
    n_gt = int(gt.max()) + 1 if gt.size else 1
    n_pred = int(pred.max()) + 1 if pred.size else 1
    code_type = np.uint8 if n_gt * n_pred <= 256 else np.int64
    codes = np.multiply(gt, code_type(n_pred), dtype=code_type, casting="unsafe")  # values fit: checked above
    np.add(codes, pred, out=codes, dtype=code_type, casting="unsafe")
    return np.bincount(codes.ravel(), minlength=n_gt * n_pred).reshape(n_gt, n_pred)


def iou_matrix(table: np.ndarray) -> np.ndarray:
    """IoU between every GT region (rows 1..) and predicted region (cols 1..), label 0 excluded on both sides."""
    inter = table[1:, 1:].astype(np.float64)
    area_gt = table[1:, :].sum(axis=1, dtype=np.float64)[:, None]
    area_pred = table[:, 1:].sum(axis=0, dtype=np.float64)[None, :]
    union = area_gt + area_pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def ari_from_table(table: np.ndarray) -> float:
    """Adjusted Rand index from a contingency table, with scikit-learn's conventions for degenerate partitions.

    Uses the pair-confusion form (as ``sklearn.metrics.adjusted_rand_score``) in exact Python integers, because the
    products overflow int64 for multi-megapixel maps.
    """
    n = int(table.sum())
    sum_sq = int((table.astype(np.int64) ** 2).sum())
    rows = table.sum(axis=1).astype(np.int64)
    cols = table.sum(axis=0).astype(np.int64)
    row_sq, col_sq = int((rows**2).sum()), int((cols**2).sum())
    tp = sum_sq - n
    fp = col_sq - sum_sq
    fn = row_sq - sum_sq
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation by ``radius`` steps of the 3×3 cross, i.e. city-block distance ≤ radius (for radius 2 exactly the
    Euclidean disk), as in-place shifted ORs — cheaper than a generic morphology call."""
    h, w = mask.shape
    grown = np.zeros((h + 2 * radius, w + 2 * radius), dtype=bool)
    grown[radius : radius + h, radius : radius + w] = mask
    for _ in range(radius):
        step = grown.copy()
        step[1:, :] |= grown[:-1, :]
        step[:-1, :] |= grown[1:, :]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown[radius : radius + h, radius : radius + w]


def boundary_f(gt: np.ndarray, pred: np.ndarray, tolerance: int = BOUNDARY_TOLERANCE_PX,
               valid: np.ndarray | None = None) -> float:
    """Boundary F-score: a boundary pixel counts as hit if the other map has a boundary within ``tolerance`` px
    (city-block distance, which at the default 2 px is the same neighbourhood as the Euclidean disk). With ``valid``,
    pixels outside it are left out of both maps' boundaries
    (see :func:`~detecture.utils.image_ops.label_boundaries`)."""
    b_gt, b_pred = label_boundaries(gt, valid), label_boundaries(pred, valid)
    n_gt, n_pred = np.count_nonzero(b_gt), np.count_nonzero(b_pred)
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    precision = np.count_nonzero(b_pred & _dilate(b_gt, tolerance)) / n_pred
    recall = np.count_nonzero(b_gt & _dilate(b_pred, tolerance)) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class SampleScore:
    """Per-sample metrics; ``matches`` are (gt region, predicted channel) pairs, both 1-based."""

    miou: float
    panoptic_iou: float
    ari: float
    boundary_f: float
    k_pred: int
    k_gt: int
    matches: tuple[tuple[int, int, float], ...]

    @property
    def k_correct(self) -> float:
        return float(self.k_pred == self.k_gt)

    def as_dict(self) -> dict:
        return {
            "miou": self.miou,
            "panoptic_iou": self.panoptic_iou,
            "ari": self.ari,
            "boundary_f": self.boundary_f,
            "k_correct": self.k_correct,
            "k_pred": self.k_pred,
            "k_gt": self.k_gt,
            "matches": [list(m) for m in self.matches],
        }


def score_labels(gt: np.ndarray, pred: np.ndarray, emitted: int | None = None) -> SampleScore:
    """Score a predicted label map (0 = unassigned) against a GT label map (0 = uncovered).

    GT regions are the labels present (an empty GT mask is not a region). Predicted regions are the labels present,
    or, with ``emitted``, every channel 1..emitted the method emitted, including one that wins no pixel: the
    published definition, under which such a channel is Hungarian-matched like any other (IoU 0) and counts in
    K_pred. Matching minimises Σ (1 − IoU); matched-mean IoU averages the matched pairs only (the published
    "mIoU"), panoptic IoU divides their sum by max(K_pred, K_gt).
    """
    table = contingency(gt, pred)
    gt_ids = np.flatnonzero(table[1:, :].sum(axis=1)) + 1
    if emitted is None:
        pred_ids = np.flatnonzero(table[:, 1:].sum(axis=0)) + 1
    else:
        if emitted < table.shape[1] - 1:
            raise ValueError(f"the label map has label {table.shape[1] - 1} but only {emitted} channels were emitted")
        table = np.pad(table, ((0, 0), (0, emitted + 1 - table.shape[1])))
        pred_ids = np.arange(1, emitted + 1)
    k_gt, k_pred = len(gt_ids), len(pred_ids)
    ious = iou_matrix(table)[np.ix_(gt_ids - 1, pred_ids - 1)]
    matches: list[tuple[int, int, float]] = []
    if k_gt and k_pred:
        rows, cols = linear_sum_assignment(1.0 - ious)
        matches = [(int(gt_ids[r]), int(pred_ids[c]), float(ious[r, c])) for r, c in zip(rows, cols)]
    total = sum(m[2] for m in matches)
    miou = total / len(matches) if matches else (1.0 if k_gt == k_pred == 0 else 0.0)
    denom = max(k_pred, k_gt)
    panoptic = total / denom if denom else 1.0
    return SampleScore(
        miou=float(miou),
        panoptic_iou=float(panoptic),
        ari=ari_from_table(table),
        boundary_f=boundary_f(gt, pred),
        k_pred=k_pred,
        k_gt=k_gt,
        matches=tuple(matches),
    )


def emitted_channels(logits: np.ndarray) -> int:
    """Channels a method emitted: all but trailing padding channels (entirely at the missing-channel logit)."""
    logits = np.asarray(logits)
    k = logits.shape[0]
    while k and bool((logits[k - 1] <= MISSING_LOGIT).all()):
        k -= 1
    return k


def score_ours(logits: np.ndarray, gt: np.ndarray) -> tuple[SampleScore, np.ndarray]:
    """Our protocol: partition ``logits`` with the static dustbin and score it against ``gt``, the GT label map
    (:func:`gt_label_map`), every emitted channel a predicted region; returns (score, label map)."""
    pred = partition(logits)
    return score_labels(gt, pred, emitted=emitted_channels(logits)), pred


@dataclass(frozen=True)
class Aggregate:
    """A dataset-level mean with a 95 % percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(values: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Aggregate:
    """Mean and percentile-bootstrap CI; seeded so a report is reproducible run to run."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return Aggregate(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Aggregate(float(values.mean()), float(low), float(high), int(values.size))
