"""The weightless, CPU-only texture segmenter behind ``--method classical``: no model, no download, any machine.

Features per pixel (computed at ≤ 256 px for speed): log energy of a Gabor filter bank (4 scales × 8 orientations,
narrow Gaussian pass-bands applied in the Fourier domain — narrow bands separated Outex textures far better than
wide ones — energy smoothed over a window proportional to the wavelength) plus local mean / standard deviation of
luminance (down-weighted) and of the CIE-Lab chroma channels. Features are standardised, reduced by PCA and
clustered with k-means (several restarts, fitted on a pixel subsample). Each cluster's score map (negative squared
distance) is spatially smoothed — a soft majority filter — and turned into a margin logit (own score minus the best
rival), so the winning region has a positive logit and the static dustbin never wins. In the autonomous regime
K ∈ 1..6 is chosen by the silhouette score on a subsample, with K = 1 when no split reaches :data:`MIN_SILHOUETTE`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.transform import resize
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

WORK_SIDE = 256
FREQUENCIES = (0.06, 0.12, 0.24, 0.4)  # cycles per pixel at the working resolution
N_ORIENTATIONS = 8
BANDWIDTH = 0.2  # Gaussian pass-band sigma, relative to the centre frequency
ENERGY_WINDOW = 2.0  # smoothing sigma of the Gabor energy, in wavelengths
STAT_SIGMA = 6.0
LUMA_STAT_WEIGHT = 0.25  # Outex-style normalised textures make luminance statistics mostly noise
CHROMA_STAT_WEIGHT = 1.0
PCA_COMPONENTS = 10
FIT_PIXELS = 12000
SCORE_SMOOTH_SIGMA = 4.0
MIN_SILHOUETTE = 0.25
MAX_K = 6


def _gabor_energy(gray: np.ndarray) -> list[np.ndarray]:
    """Log Gabor energies: Gaussian pass-bands around (f, θ) in the Fourier domain, then a wavelength-sized blur."""
    h, w = gray.shape
    spectrum = np.fft.fft2(gray - gray.mean())
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    out = []
    for f in FREQUENCIES:
        bandwidth = f * BANDWIDTH
        for i in range(N_ORIENTATIONS):
            theta = np.pi * i / N_ORIENTATIONS
            u, v = f * np.cos(theta), f * np.sin(theta)
            band = np.exp(-((fx - u) ** 2 + (fy - v) ** 2) / (2 * bandwidth**2))
            response = np.abs(np.fft.ifft2(spectrum * band))
            energy = ndimage.gaussian_filter(response, sigma=max(ENERGY_WINDOW / f, 2.0), mode="reflect")
            out.append(np.log1p(energy * 50.0))
    return out


def _local_stats(channel: np.ndarray) -> list[np.ndarray]:
    mean = ndimage.gaussian_filter(channel, STAT_SIGMA, mode="reflect")
    sq = ndimage.gaussian_filter(channel * channel, STAT_SIGMA, mode="reflect")
    return [mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))]


def texture_features(image: np.ndarray) -> np.ndarray:
    """(h, w, D) standardised feature map of an (H, W, 3) uint8 image, at ≤ :data:`WORK_SIDE` px."""
    h, w = image.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = image if scale == 1.0 else resize(image, (round(h * scale), round(w * scale)), anti_aliasing=True,
                                              preserve_range=True)
    lab = rgb2lab(np.clip(small, 0, 255).astype(np.uint8)).astype(np.float64)
    gray = lab[..., 0] / 100.0
    parts = [_standardise(_gabor_energy(gray)), LUMA_STAT_WEIGHT * _standardise(_local_stats(gray))]
    chroma = [s for c in (1, 2) if np.ptp(lab[..., c]) > 1.0 for s in _local_stats(lab[..., c] / 100.0)]
    if chroma:  # greyscale images carry no chroma; the constant channels are skipped
        parts.append(CHROMA_STAT_WEIGHT * _standardise(chroma))
    return np.concatenate(parts, axis=-1)


def _standardise(feats: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(feats, axis=-1)
    stack -= stack.mean(axis=(0, 1))
    std = stack.std(axis=(0, 1))
    return stack / np.where(std > 1e-8, std, 1.0)


def _choose_k(sample: np.ndarray, seed: int) -> int:
    """Silhouette model selection over K = 2..6; K = 1 when no split is convincing."""
    best_k, best_score = 1, MIN_SILHOUETTE
    for k in range(2, MAX_K + 1):
        labels = KMeans(k, n_init=3, random_state=seed).fit_predict(sample)
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette_score(sample, labels, random_state=seed)
        if score > best_score:
            best_k, best_score = k, score
    return best_k


def _smoothed_scores(reduced: np.ndarray, centers: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) negative squared distances to the centres, normalised and blurred (a soft majority filter)."""
    dist = ((reduced[:, None, :] - centers[None]) ** 2).sum(-1)
    scores = -dist.reshape(*shape, len(centers)).transpose(2, 0, 1) / max(float(np.median(dist.min(axis=1))), 1e-6)
    return np.stack([ndimage.gaussian_filter(s, SCORE_SMOOTH_SIGMA, mode="reflect") for s in scores])


def segment_texture(image: np.ndarray, k: int | None, seed: int = 0, refine: bool = True) -> np.ndarray:
    """(K, H, W) margin logits for an image; ``k=None`` chooses K by silhouette; a textureless image gives K = 1."""
    h, w = image.shape[:2]
    feats = texture_features(image)
    fh, fw, d = feats.shape
    flat = feats.reshape(-1, d)
    if not np.any(flat.std(axis=0) > 1e-6):  # a textureless image is one region, whatever K was asked for
        return np.ones((1, h, w), dtype=np.float32)
    rng = np.random.default_rng(seed)
    fit = flat[rng.choice(flat.shape[0], size=min(FIT_PIXELS, flat.shape[0]), replace=False)]
    pca = PCA(n_components=min(PCA_COMPONENTS, d), random_state=seed).fit(fit)
    reduced, fit_reduced = pca.transform(flat), pca.transform(fit)
    if k is None:
        k = _choose_k(fit_reduced[:2000], seed)
    if k == 1:
        return np.ones((1, h, w), dtype=np.float32)
    centers = KMeans(k, n_init=8, random_state=seed).fit(fit_reduced).cluster_centers_
    scores = _smoothed_scores(reduced, centers, (fh, fw))
    order = np.sort(scores, axis=0)
    rival = np.where(scores == order[-1], order[-2], order[-1])
    margin = (scores - rival).astype(np.float32)
    if (fh, fw) != (h, w):
        margin = np.stack([resize(m, (h, w), order=1, preserve_range=True) for m in margin]).astype(np.float32)
    return margin

