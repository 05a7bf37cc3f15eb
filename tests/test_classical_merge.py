"""Counting by merging (:mod:`detecture.classical.merge`): the coding length against its formula computed directly
from the samples, and which regions merge."""

from __future__ import annotations

import numpy as np

from detecture.classical.merge import coding_length, merge_regions


def test_coding_length_equals_the_formula_on_raw_samples():
    """Ma et al. (2007), eq. 6 with the mean coded, plus membership, from the samples with numpy's own covariance
    and determinant: L = (D + m)/2 log det(I + D/ε² Σ) + D/2 log(1 + |μ|²/ε²) − m log(n/N), where Σ is the
    covariance of the n samples and m = n / pixels_per_sample the samples they count as."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4)) @ rng.normal(size=(4, 4)) + rng.normal(size=4)
    eps, per_sample, image = 0.7, 10.0, 2000
    m, d = len(x) / per_sample, x.shape[1]
    centred = x - x.mean(axis=0)
    expected = ((d + m) / 2 * np.log(np.linalg.det(np.eye(d) + d / eps**2 * np.cov(centred.T, bias=True)))
                + d / 2 * np.log(1 + x.mean(axis=0) @ x.mean(axis=0) / eps**2) - m * np.log(len(x) / image))
    got = coding_length(len(x), x.sum(axis=0), x.T @ x, eps, per_sample, image)
    assert np.isclose(got, expected, rtol=1e-9)


def _cells(layout: list[list[int]], means: dict[int, np.ndarray], drift: float = 0.0, cell: int = 24, seed: int = 0):
    """A label map of square cells and features drawn around each cell's texture mean, with a linear drift across
    the whole image (shading, perspective) of ``drift`` per cell."""
    rng = np.random.default_rng(seed)
    labels = np.kron(np.arange(np.size(layout)).reshape(np.shape(layout)), np.ones((cell, cell), dtype=int))
    texture = np.kron(np.asarray(layout), np.ones((cell, cell), dtype=int))
    h, w = labels.shape
    features = np.stack([means[t] for t in texture.ravel()]) + rng.normal(scale=0.3, size=(h * w, 3))
    features[:, 0] += drift * np.tile(np.arange(w) / cell, h)
    return features, labels


def test_parts_of_one_texture_merge_and_two_textures_stay_apart():
    """Three cells of texture A with a drift across them and three of texture B: two regions, A's cells and B's."""
    means = {0: np.zeros(3), 1: np.array([0.0, 2.0, 0.0])}
    features, labels = _cells([[0, 0, 0], [1, 1, 1]], means, drift=0.2)
    owner = merge_regions(features, labels, 6, distortion=0.35, pixels_per_sample=20.0)
    assert owner.tolist() == [0, 0, 0, 1, 1, 1]


def test_only_adjacent_regions_merge():
    """A | B | A: the two A cells do not touch, so three regions remain."""
    means = {0: np.zeros(3), 1: np.array([0.0, 2.0, 0.0])}
    features, labels = _cells([[0, 1, 0]], means)
    owner = merge_regions(features, labels, 3, distortion=0.35, pixels_per_sample=20.0)
    assert owner.tolist() == [0, 1, 2]


def test_labels_absent_from_the_map_are_no_region():
    """Labels 1 and 3 have no pixels (a partition that left them empty): they map to -1, not to regions of their
    own, so the two cells of one texture that merge are the image's only region."""
    features, cells = _cells([[0, 0]], {0: np.ones(3)})
    labels = np.where(cells == 1, 2, 0)
    assert merge_regions(features, labels, 4, distortion=0.35, pixels_per_sample=20.0).tolist() == [0, -1, 0, -1]


def test_one_texture_in_many_cells_becomes_one_region():
    features, labels = _cells([[0, 0], [0, 0]], {0: np.ones(3)})
    assert merge_regions(features, labels, 4, distortion=0.35, pixels_per_sample=20.0).tolist() == [0, 0, 0, 0]


def test_an_image_counts_as_merge_samples_at_the_working_size_and_in_proportion_to_its_side_below(monkeypatch):
    """The smoothed features of a smaller image hold fewer independent samples: half the side, half the samples."""
    from detecture.classical import ClassicalParams, segment_texture
    from detecture.classical import segmenter

    seen = []

    def spy(features, labels, n_labels, distortion, pixels_per_sample):
        seen.append(labels.size / pixels_per_sample)
        return np.arange(n_labels)

    monkeypatch.setattr(segmenter, "merge_regions", spy)
    rng = np.random.default_rng(0)
    params = ClassicalParams()
    for side in (params.work_side, params.work_side // 2):
        image = np.repeat(rng.integers(0, 255, (side, side, 1), dtype=np.uint8), 3, axis=2)
        segment_texture(image, None, params=params)
    assert np.allclose(seen, [params.merge_samples, params.merge_samples / 2])
