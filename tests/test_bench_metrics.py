"""Benchmark metrics against independent references: scikit-learn's ARI, brute-force matching, hand-worked maps,
and reference scores of three Outex peer methods (docs/ARCHITECTURE.md, Reference data)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from detecture.benchmark.metrics import (
    ari_from_table,
    boundary_f,
    bootstrap_mean,
    contingency,
    gt_label_map,
    inverse_mask_logits,
    mask_logits,
    pad_logits,
    partition,
    score_labels,
)
from detecture.benchmark.scoring import score_logits
from detecture.benchmark.methods.predictions import label_map_logits

from shared_data import SHARED_DATA

OUTEX = SHARED_DATA / "outex"


def test_ari_matches_sklearn_on_random_maps():
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = rng.integers(5, 60, size=2)
        gt = rng.integers(0, rng.integers(1, 6), size=(h, w))
        pred = rng.integers(0, rng.integers(1, 8), size=(h, w))
        if trial % 4 == 0:  # correlated maps, not just noise
            pred = np.where(rng.random((h, w)) < 0.8, gt, pred)
        assert ari_from_table(contingency(gt, pred)) == pytest.approx(
            adjusted_rand_score(gt.ravel(), pred.ravel()), abs=1e-12)


def test_ari_degenerate_partitions_follow_sklearn():
    one = np.zeros((4, 5), dtype=np.int64)
    halves = np.repeat([[0, 1]], 10, axis=0)
    for gt, pred in [(one, one), (one, halves.reshape(4, 5)), (halves.reshape(4, 5), one)]:
        assert ari_from_table(contingency(gt, pred)) == adjusted_rand_score(gt.ravel(), pred.ravel())


def test_ari_exact_on_a_megapixel_map():
    """Pair counts of a 1024² map overflow int64 products; the result must still equal sklearn's."""
    rng = np.random.default_rng(1)
    gt = np.repeat(np.arange(4), 1024 * 1024 // 4).reshape(1024, 1024)
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 5, gt.shape))
    assert ari_from_table(contingency(gt, pred)) == pytest.approx(
        adjusted_rand_score(gt.ravel(), pred.ravel()), abs=1e-12)


def _brute_force(gt: np.ndarray, pred: np.ndarray) -> tuple[float, int]:
    """Best total IoU over every injective matching, IoUs from boolean masks; also the number of pairs."""
    gts = [gt == v for v in np.unique(gt) if v != 0]
    preds = [pred == v for v in np.unique(pred) if v != 0]
    iou = [[(g & p).sum() / (g | p).sum() for p in preds] for g in gts]
    best = 0.0
    if len(gts) <= len(preds):
        for perm in itertools.permutations(range(len(preds)), len(gts)):
            best = max(best, sum(iou[i][j] for i, j in enumerate(perm)))
    else:
        for perm in itertools.permutations(range(len(gts)), len(preds)):
            best = max(best, sum(iou[i][j] for j, i in enumerate(perm)))
    return best, min(len(gts), len(preds))


def test_matching_equals_brute_force_permutations():
    rng = np.random.default_rng(2)
    for _ in range(40):
        k_gt, k_pred = rng.integers(1, 5), rng.integers(1, 6)
        # blocky maps (upsampled) so regions are coherent and IoUs spread out
        gt = np.kron(rng.integers(0, k_gt + 1, (6, 6)), np.ones((3, 3), dtype=np.int64))
        pred = np.kron(rng.integers(0, k_pred + 1, (9, 9)), np.ones((2, 2), dtype=np.int64))
        total, pairs = _brute_force(gt, pred)
        score = score_labels(gt, pred)
        n_gt, n_pred = len(set(np.unique(gt)) - {0}), len(set(np.unique(pred)) - {0})
        assert score.k_gt == n_gt and score.k_pred == n_pred
        assert score.miou * pairs == pytest.approx(total, abs=1e-9)
        assert score.panoptic_iou == pytest.approx(total / max(n_gt, n_pred), abs=1e-9)


def test_worked_example_matched_mean_and_panoptic_differ():
    # GT: left half = 1, right half = 2 (8 px each). Prediction: left half, top-right quarter, bottom-right quarter.
    gt = np.array([[1, 1, 2, 2]] * 4)
    pred = np.array([[1, 1, 2, 2]] * 2 + [[1, 1, 3, 3]] * 2)
    s = score_labels(gt, pred)
    # matches: (1,1) IoU 8/8 = 1, (2,2 or 3) IoU 4/8 = 0.5 -> matched mean 0.75, panoptic 1.5 / max(3, 2) = 0.5
    assert s.miou == pytest.approx(0.75)
    assert s.panoptic_iou == pytest.approx(0.5)
    assert (s.k_pred, s.k_gt, s.k_correct) == (3, 2, 0.0)


def test_whole_image_as_one_region():
    # GT halves; the prediction covers everything: one pair with IoU 0.5; panoptic halves it; ARI is 0.
    gt = np.array([[1, 1, 2, 2]] * 4)
    s = score_labels(gt, np.ones_like(gt))
    assert (s.miou, s.panoptic_iou, s.ari) == (pytest.approx(0.5), pytest.approx(0.25), pytest.approx(0.0))


def test_uncovered_gt_pixels_count_against_prediction():
    gt = np.array([[1, 1, 0, 0]])  # right half not covered by any GT region
    s = score_labels(gt, np.array([[1, 1, 1, 1]]))
    assert s.miou == pytest.approx(0.5)  # IoU = 2 / 4


def test_static_dustbin_partition():
    logits = np.array([
        [[-1.0, 2.0, 0.0, 3.0, 1.0]],
        [[-2.0, 1.0, 0.0, 3.0, 4.0]],
    ])
    # pixel 0: all < 0 -> unassigned; 1: channel 1; 2: best is exactly 0 -> dustbin; 3: tie -> first; 4: channel 2
    assert partition(logits).tolist() == [[0, 1, 0, 1, 2]]
    assert partition(np.zeros((0, 2, 3))).tolist() == [[0, 0, 0], [0, 0, 0]]
    rng = np.random.default_rng(5)
    for _ in range(20):  # small integer logits: ties everywhere; np.argmax takes the first maximum
        logits = rng.integers(-3, 4, size=(rng.integers(1, 7), 9, 11)).astype(np.float32)
        stacked = np.concatenate([np.zeros((1, 9, 11), np.float32), logits])
        assert np.array_equal(partition(logits), np.argmax(stacked, axis=0))


def test_mask_logit_rule_and_padding():
    m = np.array([[[True, False]]])
    assert mask_logits(m).tolist() == [[[5.0, -5.0]]]
    padded = pad_logits(mask_logits(m), 3)
    assert padded.shape == (3, 1, 2) and (padded[1:] == -1e4).all()


def test_inverse_mask_trick_gives_exactly_the_two_way_split():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(40, 50)).astype(np.float32)
    m[m == 0] = 0.1
    labels = partition(inverse_mask_logits(m))
    assert set(np.unique(labels)) == {1, 2}
    assert np.array_equal(labels == 1, m > 0)
    binary = rng.random((40, 50)) < 0.3
    labels = partition(inverse_mask_logits(mask_logits(binary[None])[0]))
    assert np.array_equal(labels == 1, binary) and np.array_equal(labels == 2, ~binary)


def test_boundary_f_tolerance():
    gt = np.zeros((20, 20), dtype=np.int64)
    gt[:, 10:] = 1
    assert boundary_f(gt, gt) == 1.0
    shifted2 = np.zeros_like(gt)
    shifted2[:, 12:] = 1  # boundary 2 px away: inside the tolerance
    assert boundary_f(gt, shifted2) == 1.0
    shifted5 = np.zeros_like(gt)
    shifted5[:, 15:] = 1  # 5 px away: no boundary pixel is matched
    assert boundary_f(gt, shifted5) == 0.0
    assert boundary_f(gt, np.zeros_like(gt)) == 0.0
    assert boundary_f(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_gt_label_map_and_logits_path():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :, :2] = True
    masks[1, :, 2:] = True
    assert gt_label_map(masks).tolist() == [[1, 1, 2, 2]] * 4
    score, labels = score_logits(mask_logits(masks[::-1]), masks)  # channels swapped: matching undoes it
    assert score.miou == 1.0 and score.ari == 1.0 and labels.tolist() == [[2, 2, 1, 1]] * 4


def test_bootstrap_interval():
    values = np.random.default_rng(4).random(200)
    agg = bootstrap_mean(values)
    assert agg.mean == pytest.approx(values.mean())
    assert agg.low < agg.mean < agg.high
    # normal-theory 95 % half-width as an independent scale check
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert (agg.high - agg.low) / 2 == pytest.approx(half, rel=0.2)
    assert bootstrap_mean(values) == agg  # seeded: reproducible
    const = bootstrap_mean(np.full(10, 0.7))
    assert const.low == pytest.approx(0.7) and const.high == pytest.approx(0.7)
    assert bootstrap_mean(np.array([])).n == 0


@pytest.mark.skipif(not OUTEX.is_dir(), reason="shared Outex data not available")
@pytest.mark.parametrize("method, reference", [
    ("kmeans", (0.664, 0.664, 0.645)),
    ("fseg-txtmerge", (0.827, 0.825, 0.819)),
    ("pca-ms", (0.846, 0.827, 0.817)),
])
def test_outex_peer_predictions_match_reference_scores(method, reference):
    """Reference matched mIoU / panoptic IoU / ARI of three Outex peers, computed by an independent implementation
    from their published predictions (their paper reports only CS / CO; docs/ARCHITECTURE.md, Reference data)."""
    masks = np.stack([np.asarray(Image.open(OUTEX / "masks" / f"region_{k}.png")) > 127 for k in range(1, 6)])
    scores = []
    for path in sorted((OUTEX / "peer_predictions" / method).glob("seg*.png")):
        logits = label_map_logits(np.asarray(Image.open(path)))
        scores.append(score_logits(logits, masks)[0])
    assert len(scores) == 100
    got = (np.mean([s.miou for s in scores]), np.mean([s.panoptic_iou for s in scores]),
           np.mean([s.ari for s in scores]))
    assert got == pytest.approx(reference, abs=0.01)

