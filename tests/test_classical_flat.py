"""The classical segmenter on images of flat tones (no texture, perhaps mild pixel noise): their regions are their
tones, with K given and K chosen, while textured and shaded images never take that path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import data
from skimage.color import rgb2lab

from detecture.benchmark.metrics import partition
from detecture.classical import ClassicalParams, segment_texture
from detecture.classical.segmenter import _flat_tones

PAIRS = {"black/white": [(0, 0, 0), (255, 255, 255)], "grey 100/160": [(100,) * 3, (160,) * 3],
         "red/blue": [(200, 30, 30), (30, 30, 200)]}


def _image(tones: list[tuple[int, int, int]], gt: np.ndarray, noise: float) -> np.ndarray:
    """The ground-truth map painted in ``tones`` (label 1 in the first), with Gaussian noise of ``noise`` grey levels
    drawn for each channel of each pixel."""
    image = np.asarray(tones, dtype=np.float64)[gt - 1]
    image += np.random.default_rng(0).normal(0.0, noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _halves(size: int) -> np.ndarray:
    return np.where(np.arange(size)[None, :] < size // 2, 1, 2).repeat(size, axis=0)


def _thirds(size: int) -> np.ndarray:
    return np.minimum(np.arange(size)[None, :] * 3 // size + 1, 3).repeat(size, axis=0)


def _disc_on_halves(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.where((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2, 3, _halves(size))


def _accuracy_away_from_boundaries(gt: np.ndarray, logits: np.ndarray, margin: int = 2) -> float:
    """Share of the pixels more than ``margin`` px from a true boundary whose region is their true region's, each
    true region matched to the region holding most of it; 0 when two true regions match the same one."""
    labels = partition(logits)
    inner = np.ones(gt.shape, dtype=bool)
    for value in np.unique(gt):
        inner &= ndimage.binary_erosion(gt == value, iterations=margin, border_value=1) | (gt != value)
    matched = {value: np.bincount(labels[inner & (gt == value)]).argmax() for value in np.unique(gt)}
    if len(set(matched.values())) < len(matched):
        return 0.0
    return float(np.mean(labels[inner] == np.vectorize(matched.get)(gt[inner])))


@pytest.mark.parametrize("noise", [0, 3])
@pytest.mark.parametrize("size", [128, 384])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_two_flat_tones_are_two_regions(pair, size, noise):
    """Halves of two flat tones. Their filter energies are zero but along the boundary, so as texture features
    the boundary strip outweighed the tones: with K = 2 given k-means split the strip from the rest (half the
    pixels wrong) and K chosen gave 1, 3 or 4 regions. At 384 px the boundary is placed again at the input's size."""
    gt = _halves(size)
    image = _image(PAIRS[pair], gt, noise)
    assert _accuracy_away_from_boundaries(gt, segment_texture(image, 2)) >= 0.99
    chosen = segment_texture(image, None)
    assert chosen.shape[0] == 2 and _accuracy_away_from_boundaries(gt, chosen) >= 0.99


@pytest.mark.parametrize("noise", [0, 3])
@pytest.mark.parametrize("layout, tones", [(_thirds, [(60,) * 3, (128,) * 3, (200,) * 3]),
                                           (_disc_on_halves, [(200, 30, 30), (30, 160, 30), (30, 30, 200)])])
def test_three_flat_tones_are_three_regions(layout, tones, noise):
    gt = layout(256)
    image = _image(tones, gt, noise)
    assert _accuracy_away_from_boundaries(gt, segment_texture(image, 3)) >= 0.99
    chosen = segment_texture(image, None)
    assert chosen.shape[0] == 3 and _accuracy_away_from_boundaries(gt, chosen) >= 0.99


def test_a_k_given_other_than_the_tone_count():
    """Fewer regions than tones join the closest tones (the two greys, not the black); more leave the extra
    channels empty, as for any K asked for."""
    gt = _thirds(192)
    image = _image([(0,) * 3, (150,) * 3, (170,) * 3], gt, 0)
    two = partition(segment_texture(image, 2))
    assert len(np.unique(two[gt == 1])) == 1 and len(np.unique(two[gt > 1])) == 1 and two[0, 0] != two[0, -1]
    four = segment_texture(image, 4)
    assert four.shape[0] == 4 and len(np.unique(partition(four))) == 3


def _shaded_gravel() -> np.ndarray:
    gravel = data.gravel()[:256, :256].astype(np.float64) * np.linspace(1.0, 0.4, 256)[None, :]
    return np.clip(gravel, 0, 255)


def _gravel_disc_on_flat_grey() -> np.ndarray:
    yy, xx = np.mgrid[:256, :256]
    return np.where((yy - 128) ** 2 + (xx - 128) ** 2 < 70**2, data.gravel()[:256, :256], 120.0)


def _ramp_with_a_step() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    return np.repeat((80 + 40 * x + np.where(x > 0.5, 60, 0))[None, :], 256, axis=0)


def _two_photos() -> np.ndarray:
    return np.where(np.arange(256)[None, :] < 128, data.brick()[:256, :256], data.grass()[:256, :256])


@pytest.mark.parametrize("grey", [_shaded_gravel, _gravel_disc_on_flat_grey, _ramp_with_a_step, _two_photos])
def test_textures_and_shading_are_not_flat_tones(grey):
    """Texture or shading inside a region varies more across it than between neighbouring pixels, as white noise
    does not: these images are segmented by their features."""
    lab = rgb2lab(np.repeat(grey().astype(np.uint8)[..., None], 3, axis=2))
    assert _flat_tones(lab, ClassicalParams(), 6) is None


def _brick_beside_flat_grey() -> np.ndarray:
    brick = np.repeat(data.brick()[..., None], 3, axis=2)
    return np.where(_halves(512)[..., None] == 1, brick, 128).astype(np.uint8)


def _grass_beside_white() -> np.ndarray:
    grass = np.repeat(data.grass()[:384, :384, None], 3, axis=2)
    return np.where(_halves(384)[..., None] == 1, grass, 255).astype(np.uint8)


@pytest.mark.parametrize("build", [_brick_beside_flat_grey, _grass_beside_white])
def test_a_flat_area_beside_texture_is_one_region(build):
    """A flat area beside texture (a background, a margin) is one region when K is chosen: the wide windows reaching
    across the boundary give its strip along the texture features of their own, but the strip's pixels are as flat
    as the rest of the area."""
    image = build()
    gt = np.where(np.arange(image.shape[1])[None, :] < image.shape[1] // 2, 1, 2).repeat(image.shape[0], axis=0)
    logits = segment_texture(image, None)
    assert logits.shape[0] == 2
    assert _accuracy_away_from_boundaries(gt, logits, margin=8) > 0.95
