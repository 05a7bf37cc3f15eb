"""Measured region descriptions: each property on synthetic images whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from detecture.classical.describe import EMPTY_REGION, describe_regions, measure_regions

N = 128
YY, XX = np.mgrid[:N, :N].astype(np.float64)
WHOLE = np.ones((N, N), dtype=np.int32)


def grating(phase: np.ndarray, period: float, amplitude: float = 100.0) -> np.ndarray:
    """Grey sinusoidal grating: intensity varies with ``phase`` (pixels along the modulation direction)."""
    value = 128 + amplitude * np.sin(2 * np.pi * phase / period)
    return np.repeat(value[..., None], 3, axis=2).round().astype(np.uint8)


def only(image: np.ndarray, labels: np.ndarray = WHOLE):
    props = measure_regions(image, labels)
    assert len(props) == 1 and props[0] is not None
    return props[0]


@pytest.mark.parametrize(("phase", "expected"), [
    (XX, "vertical streaks"),  # intensity changes along x: the stripes run up and down
    (YY, "horizontal stripes"),
    ((XX + YY) / np.sqrt(2), "diagonal stripes rising to the right"),  # constant along x + y, i.e. "/" with y down
    ((XX - YY) / np.sqrt(2), "diagonal stripes falling to the right"),
])
def test_orientation_of_gratings(phase, expected):
    assert only(grating(phase, 6)).orientation == expected


def test_isotropic_noise_has_no_dominant_direction():
    noise = np.random.default_rng(0).integers(0, 256, (N, N), dtype=np.uint8)
    assert only(np.repeat(noise[..., None], 3, axis=2)).orientation == "no dominant direction"


def test_scale_fine_medium_coarse():
    assert only(grating(XX, 3)).scale == "fine"  # 43 cycles across the image
    assert only(grating(XX, 6)).scale == "medium"  # 21 cycles
    assert only(grating(XX, 32)).scale == "coarse"  # 4 cycles


def test_scale_is_relative_to_the_image_not_its_pixel_count():
    small = grating(XX, 32)
    large = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # the same picture at 512 px
    assert only(small).scale == only(large, np.ones(large.shape[:2], np.int32)).scale == "coarse"


def test_contrast_levels():
    assert only(grating(XX, 6, amplitude=8)).contrast == "low"
    assert only(grating(XX, 6, amplitude=45)).contrast == "medium"
    assert only(grating(XX, 6, amplitude=120)).contrast == "high"


@pytest.mark.parametrize(("rgb", "name"), [
    ((230, 20, 20), "red"), ((30, 170, 40), "green"), ((30, 60, 210), "blue"), ((128, 128, 128), "grey"),
    ((250, 250, 250), "white"), ((5, 5, 5), "black"), ((240, 220, 40), "yellow"),
])
def test_colour_names(rgb, name):
    patch = np.empty((N, N, 3), np.uint8)
    patch[:] = rgb
    props = only(patch)
    assert props.colour == name and props.scale == "uniform"


def test_colour_of_a_textured_region_is_its_mean_colour():
    image = grating(XX, 6, amplitude=60).astype(np.int16)
    image[..., 1:] //= 4  # keep red, darken green and blue: a red texture
    assert only(image.astype(np.uint8)).colour in ("red", "dark red")


@pytest.mark.parametrize(("mask", "position"), [
    (XX < N / 2, "left half"), (XX >= N / 2, "right half"), (YY < N / 2, "top half"), (YY >= N / 2, "bottom half"),
    (YY < N / 5, "top band"), ((YY > 2 * N / 5) & (YY < 3 * N / 5), "middle band"), (XX >= 4 * N / 5, "right band"),
    ((YY - N / 2) ** 2 + (XX - N / 2) ** 2 < (N / 5) ** 2, "centre"),
    ((YY < N / 4) & (XX < N / 4), "top-left corner"), ((YY > 3 * N / 4) & (XX > 3 * N / 4), "bottom-right corner"),
    ((YY < N / 4) & (np.abs(XX - N / 2) < N / 8), "top centre"),
])
def test_position_from_extent_and_centroid(mask, position):
    labels = np.where(mask, 1, 2).astype(np.int32)
    image = grating(XX, 6)
    assert measure_regions(image, labels)[0].position == position


@pytest.mark.parametrize(("mask", "position"), [
    ((YY < N / 8) | (YY >= 7 * N / 8), "top and bottom bands"),  # a letterboxed photo's bars: one region
    ((XX < N / 8) | (XX >= 7 * N / 8), "left and right bands"),  # a pillarboxed one's
    ((XX < N / 3) | (YY >= 2 * N / 3), ""),  # left and bottom thirds: it neither fills nor mostly lies in the
    # cell of its centroid, and it is no pair of bands
])
def test_a_region_in_pieces_is_not_placed_in_the_gap_between_them(mask, position):
    labels = np.where(mask, 1, 2).astype(np.int32)
    bars = measure_regions(grating(XX, 6), labels)[0]
    assert bars.position == position
    assert bars.sentence().endswith(f"contrast, in the {position}" if position else "high contrast")


def test_whole_image_and_sentence_shape():
    text = describe_regions(grating(XX, 6), WHOLE)
    assert text == ["Texture of grey medium grain, vertical streaks, high contrast, across the whole image"]


def test_two_regions_are_described_separately_and_without_cross_talk():
    """Left: vertical fine red grating; right: horizontal coarse blue grating — each keeps its own answers."""
    image = np.where((XX < N / 2)[..., None], grating(XX, 3), grating(YY, 32)).astype(np.int16)
    image[XX < N / 2] *= np.array([1, 0, 0], np.int16)
    image[XX >= N / 2] *= np.array([0, 0, 1], np.int16)
    left, right = measure_regions(image.astype(np.uint8), np.where(XX < N / 2, 1, 2))
    assert (left.orientation, left.scale, left.position) == ("vertical streaks", "fine", "left half")
    assert (right.orientation, right.scale, right.position) == ("horizontal stripes", "coarse", "right half")
    assert "red" in left.colour and "blue" in right.colour or right.colour == "navy"


def test_missing_label_and_unassigned_pixels():
    labels = np.zeros((N, N), np.int32)
    labels[:, : N // 2] = 1
    labels[0, -1] = 3  # label 2 has no pixels; label 0 (unassigned) is never described
    text = describe_regions(grating(XX, 6), labels)
    assert len(text) == 3 and text[1] == EMPTY_REGION
    assert describe_regions(grating(XX, 6), labels, count=5)[3:] == [EMPTY_REGION] * 2  # regions beyond the map


def test_a_strip_between_the_bounded_copies_pixels_is_measured_from_its_own():
    """A 400 x 3 px strip of horizontal stripes on a 2000² image falls between the pixels of both bounded copies;
    it is measured from its own pixels, not called empty."""
    side = 2000
    image = np.full((side, side, 3), 128, np.uint8)
    labels = np.ones((side, side), np.int32)
    labels[500:900, 1:4] = 2
    rows = np.arange(side)[:, None, None]
    image[500:900, 1:4] = (128 + 100 * np.sin(2 * np.pi * rows[500:900] / 8)).round().astype(np.uint8)
    strip = measure_regions(image, labels)[1]
    assert strip is not None and strip.orientation == "horizontal stripes"
    assert strip.position == "middle left" and strip.area_fraction == 400 * 3 / side**2


def test_a_thin_diagonal_across_a_large_image_is_measured_from_its_own_pixels():
    """A 1 px red diagonal spans the 2000² image, so its bounding box is reduced too, where it covers any pixel."""
    side = 2000
    image = np.full((side, side, 3), 128, np.uint8)
    labels = np.ones((side, side), np.int32)
    i = np.arange(side - 3)
    labels[i, i + 3] = 2  # off the sampled diagonal, whose pixels both copies take
    image[i, i + 3] = (200, 30, 30)
    line = measure_regions(image, labels)[1]
    assert line is not None and line.colour == "red" and line.area_fraction == (side - 3) / side**2
    assert describe_regions(image, labels)[1].startswith("Texture of uniform red")


def test_large_image_is_measured_on_a_bounded_working_copy():
    big = np.repeat(np.repeat(grating(YY, 8), 16, axis=0), 16, axis=1)  # 2048² horizontal stripes
    props = only(big, np.ones(big.shape[:2], np.int32))
    assert props.orientation == "horizontal stripes"


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="label map"):
        measure_regions(grating(XX, 6), WHOLE[:10])


def test_contrast_of_a_large_photo_is_read_from_its_own_pixels_not_an_average():
    """Black/white pixel noise at 2048²: any averaging down to a working size would make it a flat grey."""
    noise = np.random.default_rng(1).integers(0, 2, (2048, 2048), dtype=np.uint8) * 255
    props = only(np.repeat(noise[..., None], 3, axis=2), np.ones((2048, 2048), np.int32))
    assert props.contrast == "high"
