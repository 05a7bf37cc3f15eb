"""Training augmentation: flips and scale-crop applied identically to the image and every mask; colour jitter on the
image only; a flip also mirrors the position words of the sample's descriptions (:func:`mirror_words`).

Every random draw comes from a generator seeded by (seed, epoch, sample index), not from global state, so a sample
looks the same whichever DataLoader worker builds it and a resumed run sees exactly the augmentations the
uninterrupted run would have seen.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageEnhance

from .config import AugmentConfig


# The position words a flip reverses: mined descriptions end with where the region is ("along the left side of the
# image", "in the upper right part"), and a description naming the side its mask is no longer on teaches the model
# wrong words. Whole words only ("leftover" stays); a crop keeps them (a region keeps its side in the crop mostly).
_MIRRORED = {
    "horizontal": {"left": "right", "right": "left"},
    "vertical": {"top": "bottom", "bottom": "top", "upper": "lower", "lower": "upper"},
}
_MIRROR_RE = {axis: re.compile(rf"\b({'|'.join(words)})\b", re.IGNORECASE) for axis, words in _MIRRORED.items()}


class Flips(NamedTuple):
    """Which flips :func:`augment` applied to a sample."""

    horizontal: bool = False
    vertical: bool = False


class Augmented(NamedTuple):
    """An augmented sample: image, masks, and the flips its descriptions must follow."""

    image: np.ndarray
    masks: np.ndarray
    flips: Flips


def _same_case(word: str, like: str) -> str:
    """``word`` (lower case) written in the case of ``like``: all caps, capitalised, or lower."""
    if like.isupper():
        return word.upper()
    return word.capitalize() if like[0].isupper() else word


def mirror_words(text: str, flips: Flips) -> str:
    """``text`` with its position words swapped for the applied flips (left <-> right for a horizontal flip; top <->
    bottom and upper <-> lower for a vertical one), keeping each word's case."""
    for axis, flipped in zip(("horizontal", "vertical"), flips):
        if flipped:
            swap = _MIRRORED[axis]
            text = _MIRROR_RE[axis].sub(lambda m: _same_case(swap[m.group().lower()], m.group()), text)
    return text


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent generator per (seed, epoch, sample, stream); streams separate augmentation from prompt choices."""
    return np.random.default_rng([seed, epoch, index, stream])


def _crop_box(rng: np.random.Generator, h: int, w: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """A square-ish crop whose side is a random fraction of the shorter side, at a random position."""
    side = int(round(min(h, w) * rng.uniform(*scale)))
    side = max(2, min(side, h, w))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    return top, left, top + side, left + side


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - strength, 1 + strength], in random order."""
    pil = Image.fromarray(image)
    ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    for i in rng.permutation(len(ops)):
        pil = ops[i](pil).enhance(float(rng.uniform(1.0 - strength, 1.0 + strength)))
    return np.asarray(pil)


def augment(
    image: np.ndarray, masks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> Augmented:
    """Augment an (H, W, 3) uint8 image and its (K, H, W) bool masks consistently; the returned flips say how the
    sample's descriptions must be mirrored (:func:`mirror_words`).

    A crop may empty some masks; callers drop those regions (and their descriptions). If a crop would empty *every*
    region it is not applied.
    """
    h, w = image.shape[:2]
    if cfg.scale_crop_prob > 0 and rng.random() < cfg.scale_crop_prob:
        top, left, bottom, right = _crop_box(rng, h, w, cfg.scale_crop)
        cropped = masks[:, top:bottom, left:right]
        if cropped.any(axis=(1, 2)).any():
            image, masks = image[top:bottom, left:right], cropped
    horizontal = bool(rng.random() < cfg.hflip)  # drawn before the vertical flip, as always: exact resume
    flips = Flips(horizontal, vertical=bool(rng.random() < cfg.vflip))
    if flips.horizontal:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    if flips.vertical:
        image, masks = image[::-1], masks[:, ::-1]
    if cfg.color_jitter > 0:
        image = color_jitter(np.ascontiguousarray(image), rng, cfg.color_jitter)
    return Augmented(np.ascontiguousarray(image), np.ascontiguousarray(masks), flips)
