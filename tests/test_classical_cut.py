"""The classical segmenter's boundary graph cut (detecture.classical.cut) on small synthetic problems."""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage.color import rgb2lab

from detecture.classical import ClassicalParams
from detecture.classical.cut import cut_band


def _split_image(h: int = 40, w: int = 60, edge: int = 33) -> np.ndarray:
    """Two flat colours meeting at column ``edge``, in CIE-Lab (what the cut's edge costs are computed from)."""
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :edge] = (200, 40, 40)
    image[:, edge:] = (40, 40, 200)
    return rgb2lab(image)


def _band_problem(rng: np.random.Generator, h: int = 40, w: int = 60):
    """Left columns fixed to label 0, right columns to label 1, a band of coin-flip evidence between them."""
    fixed = np.full((h, w), -1)
    fixed[:, :20] = 0
    fixed[:, 45:] = 1
    unary = np.zeros((2, h, w))
    noisy = rng.random((h, w)) < 0.5
    unary[1][noisy] = 1.0  # weak evidence for label 0 on half the band pixels, for label 1 on the others
    unary[0][~noisy] = 1.0
    return unary, fixed


def test_without_a_boundary_cost_each_pixel_takes_its_cheapest_label():
    rng = np.random.default_rng(0)
    unary, fixed = _band_problem(rng)
    params = dataclasses.replace(ClassicalParams(), cut_smoothness=0.0)
    labels = cut_band(unary, fixed, _split_image(), params)
    band = fixed < 0
    np.testing.assert_array_equal(labels[band], unary.argmin(axis=0)[band])


def test_decided_pixels_keep_their_label_and_the_boundary_snaps_to_the_colour_edge():
    """Noisy evidence in the band, a colour edge at column 33: the cut gives one straight boundary on that edge."""
    rng = np.random.default_rng(1)
    unary, fixed = _band_problem(rng)
    labels = cut_band(unary, fixed, _split_image(edge=33), ClassicalParams())
    decided = fixed >= 0
    np.testing.assert_array_equal(labels[decided], fixed[decided])
    expected = np.where(np.arange(60) < 33, 0, 1)
    np.testing.assert_array_equal(labels, np.broadcast_to(expected, labels.shape))


def test_nothing_to_decide_returns_the_fixed_labels():
    fixed = np.zeros((8, 8), int)
    fixed[:, 4:] = 1
    labels = cut_band(np.zeros((2, 8, 8)), fixed, _split_image(8, 8, 4), ClassicalParams())
    np.testing.assert_array_equal(labels, fixed)


def test_undecided_pixels_that_touch_no_other_take_the_label_their_neighbours_and_evidence_favour():
    """Undecided pixels on a lattice among decided ones: the graph has nodes but no edges between them. Each pixel
    weighs its own weak evidence for label 0 against the edges to its decided neighbours, at least three of four of
    label 1, and takes label 1."""
    fixed = np.ones((8, 8), int)
    fixed[:, 0] = 0
    fixed[1::2, 1::2] = -1
    unary = np.zeros((2, 8, 8))
    unary[1] = 0.5  # weak evidence for label 0 everywhere
    labels = cut_band(unary, fixed, _split_image(8, 8, 4), ClassicalParams())
    assert (labels[fixed < 0] == 1).all()
    assert (labels[fixed >= 0] == fixed[fixed >= 0]).all()


def test_the_partition_does_not_depend_on_the_units_of_the_costs():
    """Evidence and boundary cost scaled together (nats or tenths of nats, a stronger or weaker temperature) give the
    same partition: the cut counts costs relative to the largest one, not in a fixed unit."""
    rng = np.random.default_rng(2)
    unary, fixed = _band_problem(rng)
    unary = unary * rng.uniform(2.0, 9.0, size=unary.shape)
    image = _split_image(edge=30)
    params = dataclasses.replace(ClassicalParams(), cut_smoothness=30.0)  # edges about as strong as the evidence
    reference = cut_band(unary, fixed, image, params)
    for scale in (0.01, 3.0, 30.0):  # up to evidence of hundreds of nats, a cut_temperature far above the default
        scaled = dataclasses.replace(params, cut_smoothness=params.cut_smoothness * scale)
        np.testing.assert_array_equal(cut_band(unary * scale, fixed, image, scaled), reference)
