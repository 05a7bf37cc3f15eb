import numpy as np
import pytest

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


def test_pycocotools_decodes_the_json_masks():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (7, 3), (64, 65)]:
        mask = rng.random(shape) > 0.5
        mask[0, 0] = True  # a leading zero-length run
        coco = rle.encode(mask)
        decoded = mask_api.decode(mask_api.frPyObjects(coco, *coco["size"]))
        assert decoded.shape == shape and np.array_equal(decoded.astype(bool), mask)
