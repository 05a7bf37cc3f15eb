"""Training augmentation: flips and scale-crop applied identically to the image and every mask; colour jitter on the
image only.

Every random draw comes from a generator seeded by (seed, epoch, sample index), not from global state, so a sample
looks the same whichever DataLoader worker builds it and a resumed run sees exactly the augmentations the
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from .config import AugmentConfig


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
) -> tuple[np.ndarray, np.ndarray]:
    """Augment an (H, W, 3) uint8 image and its (K, H, W) bool masks consistently.

    A crop may empty some masks; callers drop those regions (and their descriptions). If a crop would empty *every*
    region it is not applied.
    """
    h, w = image.shape[:2]
    if cfg.scale_crop_prob > 0 and rng.random() < cfg.scale_crop_prob:
        top, left, bottom, right = _crop_box(rng, h, w, cfg.scale_crop)
        cropped = masks[:, top:bottom, left:right]
        if cropped.any(axis=(1, 2)).any():
            image, masks = image[top:bottom, left:right], cropped
    if rng.random() < cfg.hflip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    if rng.random() < cfg.vflip:
        image, masks = image[::-1], masks[:, ::-1]
    if cfg.color_jitter > 0:
        image = color_jitter(np.ascontiguousarray(image), rng, cfg.color_jitter)
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)
