"""The shared image operations against plain references: what the scorer counts is what the overlays draw."""

import numpy as np
import pytest

from detecture.utils.image_ops import REGION_COLOURS, fit_to_side, label_boundaries, partition


def test_label_boundaries_match_a_pixel_loop():
    labels = np.random.default_rng(0).integers(0, 3, size=(9, 11)).astype(np.uint8)
    expected = np.zeros_like(labels, dtype=bool)
    for y in range(9):
        for x in range(11):
            right = x + 1 < 11 and labels[y, x] != labels[y, x + 1]
            below = y + 1 < 9 and labels[y, x] != labels[y + 1, x]
            expected[y, x] = right or below
    assert np.array_equal(label_boundaries(labels), expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_partition_is_argmax_with_a_dustbin_at_zero(dtype):
    logits = (np.random.default_rng(1).normal(size=(4, 16, 16)) * 3).astype(dtype)
    with_dustbin = np.concatenate([np.zeros((1, 16, 16), dtype), logits])
    assert np.array_equal(partition(logits), np.argmax(with_dustbin, axis=0))


@pytest.mark.parametrize("values", [[0.1, 0.1 + 1e-9], [1e39, 2e39]])
def test_partition_of_float64_logits_compares_them_in_float64(values):
    """A later, strictly larger float64 logit wins (it lost to a float32-rounded best), and logits beyond float32's
    range are not overflowed to infinity."""
    logits = np.array(values)[:, None, None]
    with_dustbin = np.concatenate([np.zeros((1, 1, 1)), logits])
    assert partition(logits)[0, 0] == np.argmax(with_dustbin[:, 0, 0]) == 2


@pytest.mark.parametrize("shape, side, expected", [((300, 200), 150, (150, 100)), ((80, 60), 150, (80, 60))])
def test_fit_to_side_keeps_labels_whole(shape, side, expected):
    labels = np.zeros(shape, np.uint8)
    labels[:, shape[1] // 2:] = 2
    image = np.random.default_rng(2).integers(0, 255, size=(*shape, 3)).astype(np.uint8)
    shown, shown_labels = fit_to_side(image, labels, side)
    assert shown.shape == (*expected, 3) and shown_labels.shape == expected
    assert set(np.unique(shown_labels)) == {0, 2}  # nearest neighbour: no blended label appears


def test_region_colours_are_distinct():
    assert len({tuple(c) for c in REGION_COLOURS}) == len(REGION_COLOURS)
