import numpy as np

from detecture.utils import rle


def test_hand_worked_column_major_runs():
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0, 1, 1, 1
    assert rle.encode(mask) == {"size": [2, 2], "counts": [1, 3]}
    starts_inside = np.array([[1, 0], [1, 0]], bool)  # column-major: 1, 1, 0, 0 -> leading zero-length run
    assert rle.encode(starts_inside)["counts"] == [0, 2, 2]


def test_random_masks_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 3), (64, 65)]:
        mask = rng.random(shape) > 0.5
        assert np.array_equal(rle.decode(rle.encode(mask)), mask)
