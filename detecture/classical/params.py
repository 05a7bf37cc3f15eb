"""The classical segmenter's settings as one typed, validated, picklable object (see :func:`segment_texture`).

Every default was tuned on fixed quarters (sorted ids, every fourth) of the Outex mosaics and of the DTD colour
mosaics (``python perf/bench_classical.py sweep --vary FIELD=V1,V2,...`` scores a field's values there); the
benchmark tables describe ``ClassicalParams()`` on the other three quarters. Pass a changed copy, e.g.
``dataclasses.replace(ClassicalParams(), max_k=3)``, to study one setting: the object is frozen, so a settings object
handed to worker processes cannot drift. The command line reads them from a YAML file (:func:`load_params`).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InputError
from ..prompts import MAX_TEXTURES
from .gabor import BANDWIDTH, N_ORIENTATIONS

NYQUIST = 0.5  # cycles per pixel: higher frequencies are filtered on a copy at twice the working size


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
        Gabor centre frequencies in cycles per working pixel, in (0, 1], at least one of them at most 0.5. Those
        above 0.5, the working copy's Nyquist frequency, are filtered on a copy at twice the working size and left
        out for inputs smaller than that. Four scales from coarse (0.06) to near Nyquist (0.4) span the textures
        seen on Outex and DTD mosaics; the octave above (0.8) keeps the fine grain of inputs of 512 px and more
        that the working copy averages away, which placed Outex boundaries closer and counted its textures better
        (perf/RESULTS.md, fifth round; the 384 px DTD mosaics do not have it).
    n_orientations : int
        Gabor orientations over a half-turn. 8 (22.5° steps) is the shared bank's default.
    bandwidth : float
        Gaussian pass-band sigma relative to the centre frequency. Narrow bands (0.2) separated Outex textures far
        better than wide ones. A band above 0.5 cycles is computed from a window of ±0.5 cycles per working pixel
        around its centre, so it should stay narrow there (at 0.2, the 0.8 band's sigma is a third of the window).
    energy_window : float
        Pass 1: smoothing sigma of the Gabor energy, in wavelengths. Three wavelengths give clean clusters on the
        coarse textures of photos (DTD wanted four, Outex two) at the cost of blurred boundaries, which pass 2 and the
        graph cut place.
    fine_window : float
        Pass 2: the same, narrow (1.25 wavelengths), so boundaries localise well.
    min_sigma : float
        Floor (px) of any energy smoothing sigma, so the highest frequencies still average over a few pixels.
    stat_sigma : float
        Pass 1: Gaussian window (px) of the local mean / standard deviation of lightness and chroma.
    fine_stat_sigma : float
        Pass 2: the same, narrow.
    luma_stat_weight : float
        Weight of the lightness group (local mean / spread of L*) against the texture group (the Gabor energies,
        weight 1). Each group is scaled to unit total variance before its weight applies, so 32 texture channels do
        not drown 2 lightness and 4 colour channels. 0.3 balances DTD (whose photos differ in lightness; it wanted
        0.5) against Outex (normalised textures, where lightness statistics are mostly noise; it wanted 0.15).
    chroma_stat_weight : float
        Weight of the colour group (local mean / spread of a*, b*; skipped on greyscale images), scaled the same way.
    lbp_weight : float
        Pass 1: weight of the binary-pattern group (local histograms of rotation-invariant uniform local binary
        patterns), scaled the same way; 0 leaves it out. The patterns depend only on the order of grey values, so
        shading and contrast changes across one photo barely move them, and counting by merging tells two parts of
        one texture from two textures better with them. DTD counts better the stronger they weigh, Outex (which
        counts best without them) worse; 0.7 is the strongest weight before Outex's counts fall, and with K given
        both sets gained (perf/RESULTS.md, eleventh round).
    lbp_max_radius : int
        Radii 1 .. this (px) of the 8-neighbour patterns, 10 codes each. Radius 1 alone counted Outex textures
        poorly, a third radius added nothing (eleventh round).
    lbp_sigma : float
        Gaussian window (px) of the local pattern histograms, and of the palette histograms below. Narrower
        windows counted Outex worse, wider ones DTD (eleventh round).
    palette_weight : float
        Pass 1 with K given: weight of the palette group (local histograms of the image's own chroma palette, 8
        colours from k-means of a*, b*), scaled the same way; skipped on greyscale images; 0 leaves it out. The
        colour group's mean and spread of a*, b* do not tell a speckle of two colours from one of two others with
        the same means and spreads; the palette's shares do. On the DTD tuning quarter with K given, 0.85 is the
        best weight and has the best neighbours. Left out when K is chosen: it also tells apart the colour patches
        inside one photo, and counting by merging over-counted with it, the more the stronger it weighed
        (perf/RESULTS.md, fifteenth round).
    position_weight : float
        Weight of the pixel coordinates (a group of two, scaled the same way) in the pass-1 clustering. Texture
        regions are compact, while the parts of one texture's structure (braids and the gaps between them) are
        interleaved across it, so a weak pull toward compact clusters keeps k-means from splitting a texture into
        its parts. Pixels are still assigned by appearance alone. Re-tuned once the binary patterns joined the
        features: 0.8 is the middle of the plateau on which the DTD tuning quarter keeps both its matched mIoU with
        K given and its K accuracy with K chosen; Outex's moved only at the strongest pull (perf/RESULTS.md, twelfth
        round).
    k_select_position_weight : float
        The same weight in the features of the one-region test (see ``min_silhouette``).
    pca_components : int
        PCA dimensions kept before clustering (capped by the feature count). 10 keeps nearly all the variance of the
        standardised features and makes k-means fast.
    fit_pixels : int
        Pixels subsampled to fit PCA, k-means and the pass-2 discriminant (which takes at least two per region);
        never fewer than K (``max_k`` when K is chosen), so it does not cap K. 12000 is plenty for ≤ 6 clusters.
    score_smooth_sigma : float
        Gaussian blur (px) of the pass-1 cluster scores, a soft majority filter against speckle.
    fine_smooth_sigma : float
        Gaussian blur (px) of the pass-2 log-posteriors; light, to keep the boundaries where they were found.
    band : int
        Pass 2 decides only pixels within this distance (px) of a pass-1 boundary, so a boundary moves at most this
        far. 12 px covers the pass-1 boundary error of the wide windows.
    interior : int
        Pass-2 training pixels lie at least this far (px) inside a pass-1 region, away from its uncertain edge; 0 trains
        on every pixel of the region.
    min_silhouette : float
        Autonomous K: below this silhouette of the merged partition the image is one region. Merging leaves some
        single textures in two parts (statistics that drift across the photo); at 0.25 the test changes no count of
        the tuning mosaics that was right.
    k_select_pixels : int
        Pixels subsampled for the one-region test (a silhouette costs the square of the sample), taken from the
        ``fit_pixels`` sample, so at most that many.
    k_select_sigma : float
        Gaussian blur (px) of the features of the one-region test: less pixel noise, clearer regions.
    max_k : int
        Largest K the autonomous regime returns (1 forces one region): it over-segments into ``max_k`` regions and
        merges them, so ``max_k`` is also where the count starts, not only a cap on it: a smaller one can change
        the count by more than the cap would (``skimage.data.astronaut``: 3 regions at 6 and at 3, 1 at 5, 4 and 2).
        At most :data:`~detecture.prompts.MAX_TEXTURES`, the most regions a response holds, so every
        result can be described; 6 covers the benchmark's mosaics (up to 5 textures).
    merge_distortion : float
        Autonomous K: the distortion ε up to which the merge codes each region's features (PCA features scaled to
        unit total variance), see :mod:`.merge`. Larger merges more.
    merge_samples : float
        Autonomous K: how many independent samples the smoothed features of an image at the full working size
        (``work_side`` px a side) count as; a smaller image counts in proportion to its side. More samples keep more
        regions apart. Tuned with ``merge_distortion`` on the tuning quarters (a grid, each point scored by the mean
        of its neighbours, so a knife-edge optimum is not taken): 186 is one sample per 352 working pixels, about
        the area 4πσ² of a Gaussian window of σ = 5.3 px, near ``stat_sigma``. The square-root rule for small
        images was chosen on the DTD tuning mosaics downscaled to 128 and 192 px, between a fixed count per image
        and a fixed count per pixel (perf/RESULTS.md, eighth round).
    refine_side : int
        Long-side cap (px) of the graph cut that places the boundaries; larger inputs get its partition bilinearly
        upsampled, which bounds time and memory on multi-megapixel photos.
    recut_band : int
        Autonomous K on inputs larger than the count's cut (2 × ``work_side`` px): the output's cut at
        ``refine_side`` px re-decides only the pixels within this distance (px) of the merged regions' boundaries,
        upsampled from the count's cut. On the tuning mosaics upscaled to 1000 px, 24 px placed boundaries at least
        as well as cutting the whole pass-2 band again, at less CPU time, where narrower bands lost Outex boundaries
        (perf/RESULTS.md, twelfth round).
    cut_smoothness : float
        Graph cut: cost (in tenths of a nat of the pass-2 log-posterior) of one boundary edge between two
        pixels of equal colour; it falls with the colour step across the edge, so boundaries are short and follow
        the image's edges. 3000 smooths the wiggles of the pass-2 boundaries away: on the DTD tuning quarter weaker
        costs left them, and stronger ones gained little at ever higher cost (perf/RESULTS.md, "balanced cues and
        a graph cut"). Re-swept with the binary patterns, weaker costs placed Outex boundaries better but counted
        fewer DTD mosaics right, so 3000 stayed (thirteenth round). The cut depends on it
        only through its ratio to ``cut_temperature``: 1500 at temperature 0.3 is 3000 at 0.6.
    cut_contrast : float
        Graph cut: how fast the edge cost falls with the squared CIE-Lab step, relative to the image's mean step.
    cut_temperature : float
        Graph cut: scale of the pass-2 log-posterior margins in the unary costs; 0.3 lets the boundary term
        outweigh an unsure pixel's evidence. Only its ratio to ``cut_smoothness`` matters (see there).
    """

    # A settings file (load_params) is validated field by field from these type hints; unknown keys are errors.
    __pydantic_config__ = {"extra": "forbid"}

    work_side: int = 256
    pad: int = 32
    frequencies: tuple[float, ...] = (0.06, 0.12, 0.24, 0.4, 0.8)
    n_orientations: int = N_ORIENTATIONS
    bandwidth: float = BANDWIDTH
    energy_window: float = 3.0
    fine_window: float = 1.25
    min_sigma: float = 1.5
    stat_sigma: float = 6.0
    fine_stat_sigma: float = 3.0
    luma_stat_weight: float = 0.3
    chroma_stat_weight: float = 0.7
    lbp_weight: float = 0.7
    lbp_max_radius: int = 2
    lbp_sigma: float = 8.0
    palette_weight: float = 0.85
    position_weight: float = 0.8
    k_select_position_weight: float = 0.3
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
    merge_distortion: float = 0.35
    merge_samples: float = 186.0
    refine_side: int = 1024
    recut_band: int = 24
    cut_smoothness: float = 3000.0
    cut_contrast: float = 0.3
    cut_temperature: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "frequencies", tuple(self.frequencies))
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _problem(f.name, value)
            if problem:
                raise InputError(f"ClassicalParams.{f.name}={value!r}: {problem}")

    def to_dict(self) -> dict:
        """Every field, as JSON stores it (``frequencies`` a list), for recording what an output was made with."""
        return {**asdict(self), "frequencies": list(self.frequencies)}


def load_params(path: str | os.PathLike) -> ClassicalParams:
    """The settings a YAML (or JSON) file holds: a mapping of any :class:`ClassicalParams` fields, the others left at
    their defaults, e.g. ``max_k: 4`` and ``cut_smoothness: 1e3``. Any problem is one line naming the file and key.

    The file is read with the project's typed-config rules (:mod:`detecture.utils.typed_config`), imported here
    rather than at module level so a run with the default settings does not load pydantic.
    """
    from ..utils.yaml_files import read_yaml

    data, _ = read_yaml(path, "classical settings file")
    try:
        return parse_params(data, str(path))
    except InputError as exc:  # a range error from __post_init__ does not name the file yet
        message = str(exc)
        raise InputError(message if message.startswith(f"{path}: ") else f"{path}: {message}") from None


def parse_params(data: Any, source: str, overrides: dict[str, Any] | None = None) -> ClassicalParams:
    """The settings parsed YAML ``data`` (named ``source`` in errors) holds, with ``--set`` ``overrides`` applied.

    Every field is a number, and pydantic would read ``true`` as 1, so a boolean is refused here, in data and
    overrides alike; the rest are the project's typed-config rules."""
    from ..utils.typed_config import parse_config

    for where, mapping in ((f"{source}: ", data), ("--set ", overrides)):
        for key, value in (mapping.items() if isinstance(mapping, dict) else ()):
            if isinstance(value, bool):
                raise InputError(f"{where}{key}: expected a number, got {value!r}")
    return parse_config(ClassicalParams, data, source, overrides)


_POSITIVE_INTS = {"work_side", "pad", "n_orientations", "pca_components", "fit_pixels", "k_select_pixels", "max_k",
                  "refine_side", "lbp_max_radius"}
_NON_NEGATIVE_INTS = {"band", "interior", "recut_band"}
_POSITIVE_FLOATS = {"bandwidth", "energy_window", "fine_window", "min_sigma", "stat_sigma", "fine_stat_sigma",
                    "cut_temperature", "merge_distortion", "merge_samples", "lbp_sigma"}
_NON_NEGATIVE_FLOATS = {"luma_stat_weight", "chroma_stat_weight", "lbp_weight", "palette_weight",
                        "position_weight", "k_select_position_weight", "score_smooth_sigma", "fine_smooth_sigma",
                        "k_select_sigma", "cut_smoothness", "cut_contrast"}


def _problem(name: str, value) -> str | None:
    """Why ``value`` is not a valid ``name``, or ``None``."""
    if name == "frequencies":
        if not value or not all(_is_real(f) and 0 < f <= 2 * NYQUIST for f in value) or min(value) > NYQUIST:
            return (f"must be a non-empty sequence of frequencies in (0, {2 * NYQUIST:g}] cycles per pixel, "
                    f"at least one of them at most {NYQUIST:g}")
        return None
    if name == "min_silhouette":
        return None if _is_real(value) and -1 <= value <= 1 else "must be a silhouette in [-1, 1]"
    if name == "max_k" and isinstance(value, numbers.Integral) and value > MAX_TEXTURES:
        return f"must be ≤ {MAX_TEXTURES}, the most regions a response holds"
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
