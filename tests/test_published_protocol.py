"""``score_logits(..., protocol="published")`` against the published evaluator's equations, on the synthetic cases
where the two protocols differ: overlapping GT masks, an empty GT mask, 7 textures, a non-square 2400x1600 image,
and the padding channels' NaN border.

The references below are written from the published source (scripts/test_on_dataset.py, data/dataset.py of
aviadcohz/Qwen2SAM_Detecture), independently of the code under test: OpenCV's nearest rule, PyTorch's bilinear
``align_corners=False`` equations in numpy (where ``0 x -inf`` is NaN and argmax takes NaN as the maximum), and the
matched mean IoU by brute force over assignments. Tolerances: see ``check``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from detecture.benchmark.metrics import MISSING_LOGIT, gt_label_map
from detecture.benchmark.published_protocol import published_gt
from detecture.benchmark.scoring import score_logits

SIZE = 1008


def nearest_rows(n_src: int, n_dst: int = SIZE) -> np.ndarray:
    """OpenCV's resizeNN (imgproc/src/resize.cpp): ``ifx = 1. / inv_scale`` with ``inv_scale = dst / src`` as doubles,
    then ``min(cvFloor(d * ifx), src - 1)``; Python floats are the same IEEE doubles."""
    ifx = 1.0 / (n_dst / n_src)
    return np.array([min(math.floor(d * ifx), n_src - 1) for d in range(n_dst)])


def reference_gt(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """dataset.py: the first 6 masks resized nearest and painted in order (last wins), K_gt = masks kept."""
    masks = masks[:6]
    rows, cols = nearest_rows(masks.shape[1]), nearest_rows(masks.shape[2])
    index = np.zeros((SIZE, SIZE), np.int64)
    for i, m in enumerate(masks):
        index[m[np.ix_(rows, cols)]] = i + 1
    return index, len(masks)


def bilinear_axis(n_src: int, n_dst: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's align_corners=False source indices and weights along one axis."""
    src = np.maximum((np.arange(n_dst) + 0.5) * n_src / n_dst - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.where(i0 < n_src - 1, i0 + 1, i0)
    l1 = src - i0
    return i0, i1, 1.0 - l1, l1


def reference_prediction(logits: np.ndarray) -> tuple[np.ndarray, int]:
    """test_on_dataset.py: [dustbin, textures, -inf padding] (7 channels), bilinear upsampling, argmax."""
    k = min(len(logits), 6)
    h, w = logits.shape[1:]
    channels = np.full((min(k + 2, 7), h, w), -np.inf)  # the padding channels are all alike: one stands for them
    channels[0] = 0.0
    channels[1:k + 1] = logits[:k]
    y0, y1, wy0, wy1 = bilinear_axis(h)
    x0, x1, wx0, wx1 = bilinear_axis(w)
    with np.errstate(invalid="ignore"):
        rows = channels[:, y0, :] * wy0[None, :, None] + channels[:, y1, :] * wy1[None, :, None]
        up = rows[:, :, x0] * wx0[None, None, :] + rows[:, :, x1] * wx1[None, None, :]
    return np.argmax(up, axis=0), k  # numpy's argmax, like torch's, returns the first NaN


def reference_miou(pred: np.ndarray, gt: np.ndarray, k_pred: int, k_gt: int) -> float:
    def iou(p, g):
        a, b = pred == p, gt == g
        return (a & b).sum() / max((a | b).sum(), 1)

    table = {(p, g): iou(p, g) for p in range(1, k_pred + 1) for g in range(1, k_gt + 1)}
    if min(k_pred, k_gt) == 0:
        return 0.0
    preds, gts = range(1, k_pred + 1), range(1, k_gt + 1)
    if k_pred >= k_gt:
        best = max(sum(table[p, g] for p, g in zip(ps, gts)) for ps in itertools.permutations(preds, k_gt))
    else:
        best = max(sum(table[p, g] for p, g in zip(preds, gs)) for gs in itertools.permutations(gts, k_pred))
    return best / min(k_pred, k_gt)


def blocks(k: int, h: int, w: int, rng: np.random.Generator, scale: float = 4.0) -> np.ndarray:
    """Smooth random logits at model resolution (4 x 4 blocks of constant value)."""
    coarse = rng.normal(size=(k, h // 4, w // 4)) * scale
    return np.kron(coarse, np.ones((1, 4, 4))).astype(np.float32)


def check(logits: np.ndarray, masks: np.ndarray) -> tuple:
    score, labels = score_logits(logits, masks, protocol="published")
    gt, k_gt = reference_gt(masks)
    pred, k_pred = reference_prediction(logits)
    assert (score.k_gt, score.k_pred) == (k_gt, k_pred)
    # The reference interpolates in float64, the published code in float32: the argmax may differ where two channels
    # tie to ~1e-6, which on these maps is at most a few pixels in a million.
    assert np.mean(labels != np.where(pred > k_pred, 0, pred)) < 1e-4
    assert score.miou == pytest.approx(reference_miou(pred, gt, k_pred, k_gt), abs=1e-4)
    return score, pred, gt


def test_overlapping_masks_last_texture_wins():
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 1008, 1008), bool)
    masks[0, :, :672] = True
    masks[1, :, 336:] = True  # the middle third is in both
    logits = blocks(2, 288, 288, rng)
    logits[0, :, :96] += 20
    logits[1, :, 96:] += 20
    score, pred, gt = check(logits, masks)
    assert (gt[:, 336:672] == 2).all()  # published: the later texture owns the overlap
    assert (gt_label_map(masks)[:, 336:672] == 1).all()  # ours: the first one does


def test_an_empty_mask_counts_in_k_gt():
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 1008, 1008), bool)
    masks[0, :504] = True
    masks[1, 504:] = True  # masks[2] is empty
    logits = blocks(3, 288, 288, rng, scale=0.5)
    logits[0, :144] += 10
    logits[1, 144:] += 10
    score, _, _ = check(logits, masks)
    assert score.k_gt == 3
    ours, _ = score_logits(logits[:, :252, :252], masks[:, ::4, ::4])  # ours, at one common size
    assert ours.k_gt == 2


def test_seven_textures_only_the_first_six_count():
    rng = np.random.default_rng(2)
    masks = np.zeros((7, 1008, 1008), bool)
    for i in range(7):
        masks[i, :, i * 144:(i + 1) * 144] = True
    logits = blocks(7, 288, 288, rng)
    score, pred, gt = check(logits, masks)
    assert score.k_gt == 6 and score.k_pred == 6
    assert not (gt == 7).any() and pred.max() <= 6


def test_non_square_image_is_scored_at_1008_squared_with_nearest_ground_truth():
    rng = np.random.default_rng(3)
    masks = np.zeros((2, 1600, 2400), bool)
    masks[0, :, :1000] = True
    masks[1, :, 1000:] = True
    logits = blocks(2, 288, 288, rng)
    score, _, gt = check(logits, masks)
    # OpenCV nearest: destination column d reads source column floor(d * (1 / (1008 / 2400)))
    boundary = next(d for d in range(SIZE) if nearest_rows(2400)[d] >= 1000)
    assert (gt[:, boundary - 1] == 1).all() and (gt[:, boundary] == 2).all()


def test_nearest_ground_truth_uses_opencvs_rounded_reciprocal_scale():
    """A 375-row image: 1 / (1008 / 375) rounds below 375 / 1008, so OpenCV reads source row 124 for destination
    row 336 (336 * 375 / 1008 is exactly 125); a GT boundary at source row 125 lands one row lower than
    ``floor(d * src / dst)`` puts it."""
    masks = np.zeros((2, 375, 500), bool)
    masks[0, :125] = True
    masks[1, 125:] = True
    assert nearest_rows(375)[336] == 124 and 336 * 375 // SIZE == 125
    gt, _ = published_gt(masks)
    assert np.array_equal(gt, reference_gt(masks)[0])
    assert (gt[336] == 1).all() and (gt[337] == 2).all()
    exact = np.stack([gt == 1, gt == 2])
    score, _ = score_logits(np.where(exact, 5.0, -5.0).astype(np.float32), masks, protocol="published")
    assert score.miou == 1.0  # a prediction equal to the evaluator's GT, given at 1008², is perfect


def test_padding_channels_leave_a_nan_border_that_goes_to_no_region():
    """K_pred < 6: where a bilinear weight is 0 (rows and columns 0-1: (d + 0.5) / 3.5 - 0.5 <= 0), 0 x -inf is
    NaN and the pixel takes a padding label; on 1008² from 288² that is the top two rows and left two columns."""
    rng = np.random.default_rng(4)
    masks = np.zeros((2, 1008, 1008), bool)
    masks[0, :504] = True
    masks[1, 504:] = True
    logits = blocks(2, 288, 288, rng) + 5.0
    score, pred, _ = check(logits, masks)
    border = np.zeros((SIZE, SIZE), bool)
    border[:2] = True
    border[:, :2] = True
    assert np.array_equal(pred > 2, border)
    full, _ = score_logits(np.concatenate([logits, np.full((4, 288, 288), MISSING_LOGIT, np.float32)]), masks,
                           protocol="published")
    assert full.k_pred == 2  # trailing padding channels are not emitted textures


def reference_boundary_f(gt: np.ndarray, pred: np.ndarray, tolerance: int = 2) -> float:
    """Boundary F by distance transform: boundary pixels are those whose right or lower neighbour differs, and one
    is hit when the other map's nearest boundary pixel is within ``tolerance`` (city-block)."""
    def edges(labels: np.ndarray) -> np.ndarray:
        right = np.pad(labels[:, :-1] != labels[:, 1:], ((0, 0), (0, 1)))
        down = np.pad(labels[:-1] != labels[1:], ((0, 1), (0, 0)))
        return right | down

    b_gt, b_pred = edges(gt), edges(pred)
    near_gt = ndimage.distance_transform_cdt(~b_gt, metric="taxicab") <= tolerance
    near_pred = ndimage.distance_transform_cdt(~b_pred, metric="taxicab") <= tolerance
    precision, recall = (b_pred & near_gt).sum() / b_pred.sum(), (b_gt & near_pred).sum() / b_gt.sum()
    return 2 * precision * recall / (precision + recall)


def test_boundary_f_leaves_the_nan_border_out_of_both_maps():
    """The padding border (top two rows, left two columns at 288 -> 1008) has no label to compare: boundary F is
    that of the two maps without it, so a prediction exact away from the border scores 1, not ~0.5."""
    masks = np.zeros((2, 1008, 1008), bool)
    masks[0, :, :504] = True
    masks[1, :, 504:] = True
    exact = np.full((2, 288, 288), -8.0, np.float32)
    exact[0, :, :144] = 8.0
    exact[1, :, 144:] = 8.0
    perfect, _ = score_logits(exact, masks, protocol="published")
    assert perfect.boundary_f == 1.0
    cut = np.repeat([144, 144, 146, 144, 144, 141, 144, 144, 144, 150, 144, 144], 24)  # a boundary off in places
    left = np.arange(288)[None, :] < cut[:, None]
    logits = np.where(np.stack([left, ~left]), 8.0, -8.0).astype(np.float32)
    logits[:, 40:60, 40:60] *= -1  # and a wrong square inside the first region
    score, _ = score_logits(logits, masks, protocol="published")
    gt, _ = reference_gt(masks)
    pred, _ = reference_prediction(logits)
    assert (pred[:2] > 2).all() and (pred[:, :2] > 2).all() and (pred[2:, 2:] <= 2).all()
    assert score.boundary_f == pytest.approx(reference_boundary_f(gt[2:, 2:], pred[2:, 2:]), abs=2e-3)


def test_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="protocol"):
        score_logits(np.zeros((1, 4, 4), np.float32), np.ones((1, 4, 4), bool), protocol="paper")
