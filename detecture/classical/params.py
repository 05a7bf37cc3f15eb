"""The classical segmenter's settings as one typed, validated, picklable object (see :func:`segment_texture`).

Every default is the value the segmenter was tuned with on a fixed quarter of the Outex mosaics; the benchmark tables
describe ``ClassicalParams()``. Pass a changed copy, e.g. ``dataclasses.replace(ClassicalParams(), max_k=3)``, to
study one setting: the object is frozen, so a settings object handed to worker processes cannot drift.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from ..errors import InputError
from .gabor import BANDWIDTH, N_ORIENTATIONS


@dataclass(frozen=True)
class ClassicalParams:
    """Settings of :func:`detecture.classical.segment_texture`; lengths are in working pixels unless said otherwise.

    Attributes
    ----------
    work_side : int
        Long side (px) of the working copy the features are computed on. 256 keeps a 256² image under a second of
        one core while Outex textures (periods of a few px to tens of px) stay resolved.
    pad : int
        Reflect padding (px, ≥ 1) added before Fourier-domain filtering, so one side's texture does not wrap onto the
        other. 32 covers the widest smoothing kernels' main lobes at the working size.
    frequencies : tuple of float
        Gabor centre frequencies in cycles per working pixel, in (0, 0.5]. Four octave-spaced scales from coarse
        (0.06) to near Nyquist (0.4) span the textures seen on Outex and DTD mosaics.
    n_orientations : int
        Gabor orientations over a half-turn. 8 (22.5° steps) is the shared bank's default.
    bandwidth : float
        Gaussian pass-band sigma relative to the centre frequency. Narrow bands (0.2) separated Outex textures far
        better than wide ones.
    energy_window : float
        Pass 1: smoothing sigma of the Gabor energy, in wavelengths. Two wavelengths give clean clusters at the cost
        of blurred boundaries (pass 2 fixes them).
    fine_window : float
        Pass 2: the same, narrow (1.25 wavelengths), so boundaries localise well.
    min_sigma : float
        Floor (px) of any energy smoothing sigma, so the highest frequencies still average over a few pixels.
    stat_sigma : float
        Pass 1: Gaussian window (px) of the local mean / standard deviation of lightness and chroma.
    fine_stat_sigma : float
        Pass 2: the same, narrow.
    luma_stat_weight : float
        Weight of the lightness statistics among the features. 0.25: Outex-style normalised textures make
        luminance statistics mostly noise.
    chroma_stat_weight : float
        Weight of the CIE-Lab chroma statistics (skipped on greyscale images). 1.0: colour is a strong cue on photos.
    pca_components : int
        PCA dimensions kept before clustering (capped by the feature count). 10 keeps nearly all the variance of the
        standardised features and makes k-means fast.
    fit_pixels : int
        Pixels subsampled to fit PCA, k-means and the pass-2 discriminant. 12000 is plenty for ≤ 6 clusters.
    score_smooth_sigma : float
        Gaussian blur (px) of the pass-1 cluster scores, a soft majority filter against speckle.
    fine_smooth_sigma : float
        Gaussian blur (px) of the pass-2 log-posteriors; light, to keep the boundaries where they were found.
    band : int
        Pass 2 decides only pixels within this distance (px) of a pass-1 boundary, so a boundary moves at most this
        far. 12 px covers the pass-1 boundary error of the wide windows.
    interior : int
        Pass-2 training pixels lie at least this far (px) inside a pass-1 region, away from its uncertain edge.
    min_silhouette : float
        Autonomous K: below this silhouette of the chosen split the image is one region. 0.25 separated textured
        mosaics from single textures on the tuning quarter.
    k_select_pixels : int
        Pixels subsampled for choosing K (k-means runs for every candidate K, so fewer than ``fit_pixels``).
    k_select_sigma : float
        Gaussian blur (px) of the PCA features before choosing K: less pixel noise, clearer clusters.
    max_k : int
        Largest K the autonomous regime considers (1 forces one region). 6 covers the benchmark's mosaics.
    refine_side : int
        Output-resolution cap (px) of the guided filter; larger inputs get its logits bilinearly upsampled, which
        bounds time and memory on multi-megapixel photos.
    guide_radius : int
        Guided-filter window radius, in working pixels: how far a boundary can snap to a lightness edge.
    guide_eps : float
        Guided-filter regularisation, in squared lightness units (lightness in [0, 1]); small, so edges are followed.
    """

    work_side: int = 256
    pad: int = 32
    frequencies: tuple[float, ...] = (0.06, 0.12, 0.24, 0.4)
    n_orientations: int = N_ORIENTATIONS
    bandwidth: float = BANDWIDTH
    energy_window: float = 2.0
    fine_window: float = 1.25
    min_sigma: float = 1.5
    stat_sigma: float = 6.0
    fine_stat_sigma: float = 3.0
    luma_stat_weight: float = 0.25
    chroma_stat_weight: float = 1.0
    pca_components: int = 10
    fit_pixels: int = 12000
    score_smooth_sigma: float = 4.0
    fine_smooth_sigma: float = 1.0
    band: int = 12
    interior: int = 6
    min_silhouette: float = 0.25
    k_select_pixels: int = 2000
    k_select_sigma: float = 6.0
    max_k: int = 6
    refine_side: int = 1024
    guide_radius: int = 4
    guide_eps: float = 1e-4

    def __post_init__(self) -> None:
        object.__setattr__(self, "frequencies", tuple(self.frequencies))
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _problem(f.name, value)
            if problem:
                raise InputError(f"ClassicalParams.{f.name}={value!r}: {problem}")


_POSITIVE_INTS = {"work_side", "pad", "n_orientations", "pca_components", "fit_pixels", "k_select_pixels", "max_k",
                  "refine_side", "guide_radius"}
_NON_NEGATIVE_INTS = {"band", "interior"}
_POSITIVE_FLOATS = {"bandwidth", "energy_window", "fine_window", "min_sigma", "stat_sigma", "fine_stat_sigma",
                    "guide_eps"}
_NON_NEGATIVE_FLOATS = {"luma_stat_weight", "chroma_stat_weight", "score_smooth_sigma", "fine_smooth_sigma",
                        "k_select_sigma"}


def _problem(name: str, value) -> str | None:
    """Why ``value`` is not a valid ``name``, or ``None``."""
    if name == "frequencies":
        if not value or not all(_is_real(f) and 0 < f <= 0.5 for f in value):
            return "must be a non-empty sequence of frequencies in (0, 0.5] cycles per pixel"
        return None
    if name == "min_silhouette":
        return None if _is_real(value) and -1 <= value <= 1 else "must be a silhouette in [-1, 1]"
    if name in _POSITIVE_INTS or name in _NON_NEGATIVE_INTS:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            return "must be an integer"
        low = 1 if name in _POSITIVE_INTS else 0
        return None if value >= low else f"must be ≥ {low}"
    if not _is_real(value):
        return "must be a number"
    if name in _POSITIVE_FLOATS:
        return None if value > 0 else "must be > 0"
    return None if value >= 0 else "must be ≥ 0"


def _is_real(value) -> bool:
    """A finite real number (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
