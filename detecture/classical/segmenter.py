"""The weightless, CPU-only texture segmenter behind ``--method classical``: no model, no download, any machine.

Two passes over one Gabor filter bank (5 scales × 8 orientations, narrow Gaussian pass-bands applied in the Fourier
domain — narrow bands separated Outex textures far better than wide ones), computed on a working copy whose long
side is at most ``work_side`` px; the finest scale, above the working copy's Nyquist frequency, is filtered on a copy
at twice that size when the input has it. Every setting named here in ``code`` is a field of
:class:`.ClassicalParams`:

1. **Find the textures.** Per pixel: log Gabor energy smoothed over a window of ``energy_window`` wavelengths,
   local mean / standard deviation of lightness and of the CIE-Lab chroma channels, and local histograms of
   rotation-invariant local binary patterns over ``lbp_sigma`` px (blind to shading), in four weighted groups;
   with K given, a fifth: local histograms of the colour image's own chroma palette.
   Features are standardised, reduced by PCA and clustered with k-means (several restarts, on a pixel subsample)
   with the pixel coordinates beside them at ``position_weight``, so the centres are compact areas rather than the
   interleaved parts of one texture; pixels then join the centre they look like. In the autonomous regime the
   image is segmented into ``max_k`` regions (all three steps) and adjacent regions are merged while merging
   shortens the coding length of their features (:mod:`.merge`), with K = 1 when the merged partition's
   silhouette is below ``min_silhouette``.
   Wide windows make the clusters clean but put the boundaries where the blurred features
   cross, pixels to tens of pixels away from the true edge.
2. **Place the boundaries.** The same filter responses smoothed over a *narrow* window (``fine_window``
   wavelengths) localise well but are noisy; a linear discriminant (shared covariance, so noise is modelled, not
   memorised) is fitted on the interiors of the pass-1 regions and its log-posteriors, lightly smoothed, decide the
   pixels within ``band`` px of a pass-1 boundary. Farther pixels keep their pass-1 label.
3. **Follow the image edges.** The pass-2 margins (own log-posterior minus the best rival's) are upsampled to the
   input size, capped at ``refine_side`` px, and a graph cut (:mod:`.cut`) re-decides the band: each label costs its
   margin deficit, each boundary edge a cost that falls with the colour step across it, so boundaries are short and
   lie on colour edges. The output is the cut's partition as ±1 logits (the winner positive, so the benchmark's
   static dustbin never wins), bilinearly upsampled beyond ``refine_side``.

An image of a few flat tones (up to white pixel noise: a chart, a drawing, a painted wall) has no texture; the
features above would describe only the boundaries between its tones. It is recognised before any feature is computed
and segmented by its tones (:func:`_flat_tones`).

Feature groups (texture, lightness, colour, patterns, palette) are each scaled to unit total variance before
their weights apply, so the 32-40 Gabor channels do not drown the 4 colour channels on photos. All feature smoothing
runs in the Fourier domain on a reflect-padded copy; memory is bounded by the working size, a few planes at
≤ ``refine_side`` px and the (K, H, W) output, so a 12 MP photo needs little more than its logits.
"""

from __future__ import annotations

import numbers

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage
from skimage.color import rgb2lab
from skimage.feature import local_binary_pattern
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import silhouette_score

from ..errors import InputError
from ..images import as_rgb_array
from ..utils.image_ops import fitted_size, label_boundaries
from .cut import cut_band
from .gabor import bank, centres
from .merge import merge_regions, renumbered
from .params import NYQUIST, ClassicalParams

_LOG_POSTERIOR_FLOOR = 30.0  # nats: pass-2 log-posteriors below -30 say nothing more
_PASS1_MARGIN = 100.0  # the margin pass 2 gives the pixels it leaves to pass 1
_DECIDED = 50.0  # nats: a margin between the two above; pixels at or over it are not re-decided by the cut
_TIE = np.float32(1e-6)  # the least logit of a pixel's winner (see _positive_winner)
_ROW_BLOCK = 256  # rows per block in _positive_winner
_ROUNDING = 1e-5  # relative size under which a map's spread is single-precision rounding, not texture
_PALETTE_COLOURS = 8  # entries of an image's chroma palette (see _palette_histograms)
_PALETTE_SAMPLE = 4000  # k-means fits the palette on about this many working pixels
_FLAT_STEP = 4.0  # noise deviations: a larger step between neighbours separates flat regions (see _flat_tones)
_FLAT_QUANTUM = 1.0  # CIE-Lab units, a grey level or two: steps and spreads within it are quantisation
_FLAT_COVER = 0.75  # the flat regions of an image of flat tones hold at least this share of its pixels
_FLAT_SPREAD = 1.5  # a flat region spreads about its mean colour by at most this many times the pixel noise
# Lab units, about a quarter of a grey level: a counted region this still inside is flat (see _join_flat). Only a
# noise-free area passes (a drawn background, a margin, clipped white): two real textures at half a grey level of
# contrast do not, and pixel noise gives a flat area features of its own, with which it is counted as one already.
_FLAT_REGION_SPREAD = 0.1
_FLAT_REGION_EDGE = 2  # px of a counted region's edge left out of that test


class _LabCopies:
    """CIE-Lab versions of box-filtered copies of one (H, W, 3) uint8 input, each size converted once.

    The working copy, the double-size copy of the finest bands and the graph cut's copy share a size for some inputs
    (a 512 px input is both of the last two at the defaults; one of at most 256 px is all three)."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.shape = self.image.shape[:2]
        self._labs: dict[tuple[int, int], np.ndarray] = {}

    def at(self, h: int, w: int) -> np.ndarray:
        """(h, w, 3) Lab of the copy of size (h, w), box-filtered (the input itself when it has that size)."""
        if (h, w) not in self._labs:
            copy = self.image if self.shape == (h, w) else np.asarray(
                Image.fromarray(self.image).resize((w, h), Image.Resampling.BOX))
            self._labs[h, w] = rgb2lab(copy)
        return self._labs[h, w]

    def fitted(self, side: int) -> np.ndarray:
        """The same for the copy with long side ≤ ``side`` (the input's own size when it is small enough)."""
        return self.at(*fitted_size(*self.shape, side))


class _Fourier:
    """Frequency grids of the padded working image, for pass-bands and Gaussian smoothing by multiplication.

    Single precision throughout: the features are standardised and clustered, and float32 FFTs are twice as fast.
    """

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.fy = sfft.fftfreq(shape[0]).astype(np.float32)[:, None]
        self.fx = sfft.fftfreq(shape[1]).astype(np.float32)[None, :]
        self.r2 = self.fy**2 + sfft.rfftfreq(shape[1]).astype(np.float32)[None, :] ** 2

    def spectrum(self, image: np.ndarray) -> np.ndarray:
        return sfft.rfft2(image.astype(np.float32, copy=False), workers=1)

    def smooth(self, spectrum: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian blur (sigma in px) of the real map whose :meth:`spectrum` is given."""
        transfer = np.exp(np.float32(-2 * np.pi**2 * sigma**2) * self.r2)
        return sfft.irfft2(spectrum * transfer, s=self.shape, workers=1)


def _gabor_spectra(gray: np.ndarray, fourier: _Fourier, frequencies: tuple[float, ...],
                   params: ClassicalParams) -> list[tuple[float, np.ndarray]]:
    """(frequency, spectrum of |response|) of each pass-band of the shared bank (:func:`.gabor.bank`).

    The spectra of the magnitudes are kept, so each pass smooths them with one inverse transform."""
    spectrum = sfft.fft2((gray - gray.mean()).astype(np.complex64), workers=1)
    bands = bank(fourier.fy, fourier.fx, frequencies, params.bandwidth, n_orientations=params.n_orientations)
    return [(f, fourier.spectrum(np.abs(sfft.ifft2(spectrum * band, workers=1))))
            for f, per_frequency in zip(frequencies, bands) for band in per_frequency]


def _fine_gabor_spectra(double: np.ndarray, fourier: _Fourier, frequencies: tuple[float, ...],
                        params: ClassicalParams) -> list[tuple[float, np.ndarray]]:
    """The same for bands above the working copy's Nyquist frequency, filtered on ``double``, the lightness (L* / 100)
    of a copy of the image at twice the working size, with the magnitudes sampled on the working grid.

    A band passes only frequencies within a few ``bandwidth · f`` of its centre, a window narrower than the working
    grid's whole spectrum. So the copy's spectrum is cut to a working-size window around the centre and transformed
    back at the working size: that is the response at every second pixel of the copy, shifted in frequency by the
    centre, which multiplies it by a phase the magnitude drops. No transform runs at the copy's size but the first.
    """
    gray = np.pad(double, 2 * params.pad, mode="reflect")
    spectrum = sfft.fft2((gray - gray.mean()).astype(np.complex64), workers=1)
    (big_h, big_w), (h, w) = gray.shape, fourier.shape
    halves = [f / 2 for f in frequencies]  # in cycles per pixel of the copy
    fy, fx = sfft.fftfreq(big_h).astype(np.float32)[:, None], sfft.fftfreq(big_w).astype(np.float32)[None, :]
    bands = bank(fy, fx, halves, params.bandwidth, n_orientations=params.n_orientations)
    u, v = centres(halves, params.n_orientations)
    rows, cols = np.rint(sfft.fftfreq(h) * h).astype(int), np.rint(sfft.fftfreq(w) * w).astype(int)
    out = []
    for i, f in enumerate(frequencies):
        for j, band in enumerate(bands[i]):
            centre_row, centre_col = round(float(v[i, j]) * big_h), round(float(u[i, j]) * big_w)
            window = np.ix_((rows + centre_row) % big_h, (cols + centre_col) % big_w)
            # A transform of a quarter of the points scales by 4 where the copy-size one would not.
            envelope = np.abs(sfft.ifft2(spectrum[window] * band[window], workers=1)) / np.float32(4.0)
            out.append((f, fourier.spectrum(envelope)))
    return out


def _features(lab: np.ndarray, gabor, fourier: _Fourier, window: float, stat_sigma: float,
              params: ClassicalParams, lbp_sigma: float | None = None, palette: bool = False) -> np.ndarray:
    """(h, w, D) standardised features of the padded image: log Gabor energies smoothed over ``window`` wavelengths
    plus local statistics of lightness and chroma over ``stat_sigma`` px, local histograms of binary patterns over
    ``lbp_sigma`` px where it is given, and with ``palette`` those of a colour image's palette over the same window;
    the padding is cropped off."""
    crop = (slice(params.pad, -params.pad), slice(params.pad, -params.pad))
    energies = [np.log1p(np.maximum(fourier.smooth(spec, max(window / f, params.min_sigma))[crop], 0.0)
                         * np.float32(50.0))
                for f, spec in gabor]
    gray = lab[..., 0] / 100.0
    parts = [_group(energies, 1.0), _group(_local_stats(gray, fourier, stat_sigma, crop), params.luma_stat_weight)]
    chroma = [s for c in _chroma_channels(lab) for s in _local_stats(lab[..., c] / 100.0, fourier, stat_sigma, crop)]
    if chroma:  # greyscale images carry no chroma; the constant channels are skipped
        parts.append(_group(chroma, params.chroma_stat_weight))
    if lbp_sigma is not None and params.lbp_weight > 0:
        parts.append(_group(_pattern_histograms(lab[..., 0], fourier, lbp_sigma, crop, params.lbp_max_radius),
                            params.lbp_weight))
    shares = _palette_histograms(lab, fourier, lbp_sigma, crop) if palette and chroma and params.palette_weight else []
    if shares:
        parts.append(_group(shares, params.palette_weight))
    return np.concatenate(parts).transpose(1, 2, 0)


def _pattern_histograms(lightness: np.ndarray, fourier: _Fourier, sigma: float, crop, max_radius: int
                        ) -> list[np.ndarray]:
    """Local histograms of rotation-invariant uniform local binary patterns (Ojala, Pietikäinen & Mäenpää, TPAMI
    2002): at each radius 1..``max_radius`` px, each pixel's 8 neighbours thresholded at its own value give one of
    10 codes, and each code's share of a Gaussian window of ``sigma`` px is a map (its square root, so a window's
    histogram is compared by the Hellinger distance).

    The codes depend on the order of grey values, which shading and contrast changes across one photo keep (up to
    ties between quantised values and the interpolated diagonal neighbours), where they shift the filter energies;
    that is what tells two parts of one texture from two textures when the image's regions are counted (see
    perf/RESULTS.md, eleventh round)."""
    # Reflected, not zero, beyond the edge: codes there would differ from the inside even on a uniform image, and the
    # smoothing would carry them in as texture.
    grey = np.pad(np.clip(np.rint(lightness * 2.55), 0, 255).astype(np.uint8), max_radius, mode="reflect")
    inside = (slice(max_radius, -max_radius),) * 2
    codes = [local_binary_pattern(grey, 8, radius, method="uniform")[inside] for radius in range(1, max_radius + 1)]
    return [share for at_radius in codes for share in _shares(at_radius, 10, fourier, sigma, crop)]


def _chroma_channels(lab: np.ndarray) -> list[int]:
    """The chroma channels (1: a*, 2: b*) of a Lab image that vary by more than a unit: none on a greyscale image,
    whose constant channels carry no colour (only rounding)."""
    return [c for c in (1, 2) if np.ptp(lab[..., c]) > 1.0]


def _palette_histograms(lab: np.ndarray, fourier: _Fourier, sigma: float, crop) -> list[np.ndarray]:
    """Local histograms of the image's own chroma palette: ``_PALETTE_COLOURS`` entries from k-means of (a*, b*) over
    the image (fewer if it has fewer distinct colours, none if it has one), every pixel in the nearest, each entry's
    share of a Gaussian window of ``sigma`` px as a map (its square root, compared by the Hellinger distance).

    The mean and spread of a* and b* (the colour group) do not tell a speckle of two colours from a speckle of two
    others with the same means and spreads; the palette's shares do. It is the image's own palette, not fixed hue
    bins: DTD photos are mostly of low chroma, where fixed bins would put nearly every pixel in one. The k-means seed
    is fixed: the palette is a property of the image.

    Used only when K is given (:func:`segment_texture`): it separates the textures of a known number of regions
    better, but it also tells apart the colour patches inside one photo, and counting by merging over-counted with
    it (perf/RESULTS.md, fifteenth round)."""
    chroma = lab[..., 1:].reshape(-1, 2).astype(np.float32)
    inside = lab[crop][..., 1:].reshape(-1, 2).astype(np.float32)
    sample = inside[:: max(1, inside.shape[0] // _PALETTE_SAMPLE)]
    colours = min(_PALETTE_COLOURS, len(np.unique(sample, axis=0)))
    if colours < 2:
        return []
    nearest = KMeans(colours, n_init=2, random_state=0).fit(sample).predict(chroma).reshape(lab.shape[:2])
    return _shares(nearest, colours, fourier, sigma, crop)


def _shares(bins: np.ndarray, n: int, fourier: _Fourier, sigma: float, crop) -> list[np.ndarray]:
    """Square roots of each of ``n`` bins' share of a Gaussian window of ``sigma`` px, cropped; ``bins`` is the
    padded (h, w) map of every pixel's bin."""
    indicators = (bins[None] == np.arange(n)[:, None, None]).astype(np.float32)
    shares = fourier.smooth(fourier.spectrum(indicators), sigma)[(slice(None), *crop)]
    return list(np.sqrt(np.maximum(shares, 0.0)))


def _group(feats: list[np.ndarray], weight: float) -> np.ndarray:
    """A feature group standardised per map and scaled to total variance ``weight²``, so a group's pull on the
    clustering does not grow with its number of channels."""
    return _standardise(feats) * np.float32(weight / np.sqrt(len(feats)))


def _local_stats(channel: np.ndarray, fourier: _Fourier, sigma: float, crop) -> list[np.ndarray]:
    """Local mean and standard deviation. The variance is the difference of two smoothed maps, whose single-precision
    rounding leaves about 1e-7 of the mean square; anything under ``_ROUNDING`` of it is taken as zero, so a uniform
    area has no spread (its square root would otherwise be noise of 1e-4, which standardising blows up to unit
    variance). A local spread of one grey level on a mid-grey image is six times that threshold."""
    mean = fourier.smooth(fourier.spectrum(channel), sigma)
    sq = fourier.smooth(fourier.spectrum(channel * channel), sigma)
    var = sq - mean * mean
    return [mean[crop], np.sqrt(np.where(var > _ROUNDING * sq, var, 0.0))[crop]]


def _standardise(feats: list[np.ndarray]) -> np.ndarray:
    """(D, h, w) stack with each map at zero mean and unit variance; a map whose spread is under ``_ROUNDING`` of its
    root mean square is rounding noise of a constant and is left at (near) zero, not blown up to unit variance."""
    stack = np.stack(feats).astype(np.float32, copy=False)
    flat = stack.reshape(len(feats), -1)
    mean = flat.mean(axis=1, keepdims=True)
    flat -= mean
    std = flat.std(axis=1, keepdims=True)
    flat /= np.where(std > _ROUNDING * np.sqrt(std * std + mean * mean), std, 1.0)
    return stack


def _prepare(copies: _LabCopies, params: ClassicalParams):
    """Lab working copy (box-filtered to long side ≤ ``work_side``, reflect-padded), its grids and Gabor spectra.

    Bands up to the working copy's Nyquist frequency are filtered on it; finer ones on a copy at twice its size, and
    only where the input has that resolution, so they add what the working copy averaged away and never invent it."""
    small = copies.fitted(params.work_side)
    pad = params.pad
    lab = np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    fourier = _Fourier(lab.shape[:2])
    coarse = tuple(f for f in params.frequencies if f <= NYQUIST)
    fine = tuple(f for f in params.frequencies if f > NYQUIST)
    gabor = _gabor_spectra(lab[..., 0] / 100.0, fourier, coarse, params)
    h, w = small.shape[:2]
    if fine and copies.shape[0] >= 2 * h and copies.shape[1] >= 2 * w:
        gabor += _fine_gabor_spectra(copies.at(2 * h, 2 * w)[..., 0] / 100.0, fourier, fine, params)
    return lab, fourier, gabor


def texture_features(image: np.ndarray | Image.Image, params: ClassicalParams | None = None,
                     counting: bool = False) -> np.ndarray:
    """(h, w, D) standardised pass-1 feature map of an image (any form :func:`~detecture.images.as_rgb_array`
    reads), at ≤ ``params.work_side`` px: those a given K is segmented on, or with ``counting`` those K is chosen on
    (without the palette group)."""
    params = params or ClassicalParams()
    return _pass1_features(*_prepare(_LabCopies(as_rgb_array(image)), params), params, counting)


def _pass1_features(lab: np.ndarray, fourier: _Fourier, gabor, params: ClassicalParams, counting: bool) -> np.ndarray:
    """The wide-window features pass 1 clusters on; with ``counting`` (K being chosen) without the palette group,
    which tells apart the colour patches inside one photo (see :func:`_palette_histograms`)."""
    return _features(lab, gabor, fourier, params.energy_window, params.stat_sigma, params, params.lbp_sigma,
                     palette=not counting)


def _position(h: int, w: int) -> np.ndarray:
    """(h·w, 2) pixel coordinates as a feature group of unit total variance (each coordinate standardised).

    Weighted beside the PCA features k-means runs on, they pull each centre toward one compact area: texture
    regions are compact, while the parts of one texture's structure (braids and the gaps between them, bricks and
    mortar) are interleaved everywhere in it, so a weak pull stops k-means from splitting a texture into its
    parts."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    return _group([yy, xx], 1.0).reshape(2, -1).T


def _one_region(sample: np.ndarray, labels: np.ndarray, params: ClassicalParams) -> bool:
    """Whether a chosen partition is too weak to be more than one texture: its silhouette on ``sample`` (features
    smoothed over ``k_select_sigma`` px, coordinates beside them) is below ``min_silhouette``. Merging keeps apart
    the parts of a single texture whose statistics drift across it (one grass photo came out as two); their
    silhouette is low. A sample that holds fewer than two of the regions (one too small to be drawn) cannot be
    scored, and the partition stands."""
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return False
    return silhouette_score(sample, labels) < params.min_silhouette


def _smooth_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(m, sigma, mode="reflect") for m in maps])


def _coarse_scores(reduced: np.ndarray, centers: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """(K, h, w) negative squared distances to the centres, normalised and blurred (a soft majority filter)."""
    dist = ((reduced[:, None, :] - centers[None]) ** 2).sum(-1)
    scores = -dist.reshape(*shape, len(centers)).transpose(2, 0, 1) / max(float(np.median(dist.min(axis=1))), 1e-6)
    return _smooth_maps(scores, sigma)


def _refine(feats: np.ndarray, coarse: np.ndarray, k: int, seed: int,
            params: ClassicalParams) -> np.ndarray | None:
    """(K, h, w) pass-2 scores: a linear discriminant on narrow-window features, trained on pass-1 interiors, decides
    the band around the pass-1 boundaries; ``None`` when some region has under two interior pixels to learn from
    (its class covariance needs two)."""
    labels = coarse.argmax(axis=0)
    h, w, d = feats.shape
    # scipy erodes until nothing changes at iterations=0, which would empty every region; 0 px inside is the region.
    interiors = [ndimage.binary_erosion(labels == c, iterations=params.interior, border_value=1)
                 if params.interior else labels == c for c in range(k)]
    if min(np.count_nonzero(m) for m in interiors) < 2:
        return None
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, m in enumerate(interiors):
        idx = np.flatnonzero(m)
        idx = rng.choice(idx, size=min(max(2, params.fit_pixels // k), idx.size), replace=False)
        xs.append(feats.reshape(-1, d)[idx])
        ys.append(np.full(idx.size, c))
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto", priors=np.full(k, 1.0 / k))
    lda.fit(np.concatenate(xs), np.concatenate(ys))
    log_post = lda.predict_log_proba(feats.reshape(-1, d)).reshape(h, w, k).transpose(2, 0, 1)
    fine = _smooth_maps(np.maximum(log_post, -_LOG_POSTERIOR_FLOOR), params.fine_smooth_sigma)
    far = ndimage.distance_transform_edt(~label_boundaries(labels)) > params.band
    onehot = (labels[None] == np.arange(k)[:, None, None])
    return np.where(far[None], np.where(onehot, 0.0, -_PASS1_MARGIN), fine)


def segment_texture(image: np.ndarray | Image.Image, k: int | None, seed: int = 0, refine: bool = True,
                    params: ClassicalParams | None = None) -> np.ndarray:
    """(K, H, W) logits for an image, the winner positive at every pixel (the graph cut's partition as ±1, or
    margins without it); ``k=None`` chooses K (:mod:`.merge`); no texture gives K = 1.

    ``image`` is read by the API's rules (:func:`~detecture.images.as_rgb_array`: uint8 as is, greyscale, RGBA,
    16-bit and float arrays converted, :class:`InputError` for what is no image), so this function segments what
    ``detecture.segment`` would; ``k`` is a whole number ≥ 1 or ``None``.

    A K that was asked for is kept even where a region wins no pixel, also on an image of fewer pixels than K, whose
    extra channels win none; a chosen K is not: a region the final partition leaves empty was not found, so its
    channel is dropped rather than reported as an empty region. An image of flat tones has one region per tone
    (:func:`_flat_tones`), the closest joined while there are more than K (or ``max_k``).

    ``refine=False`` skips pass 2 and the graph cut (boundaries where the wide-window features cross,
    bilinearly upsampled), for comparisons. ``params`` holds every other setting (``None``: the tuned defaults).
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
        raise InputError(f"k must be a whole number of regions from 1, or None to choose it, got {k!r}")
    image = as_rgb_array(image)
    params = params or ClassicalParams()
    chosen = k is None
    h, w = image.shape[:2]
    copies = _LabCopies(image)
    tones = _flat_tones(copies.fitted(params.work_side), params, params.max_k if chosen else k)
    if tones is not None:
        return _tone_logits(tones, k, copies, refine, params, h, w)
    lab, fourier, gabor = _prepare(copies, params)
    feats = _pass1_features(lab, fourier, gabor, params, counting=chosen)
    fh, fw, d = feats.shape
    flat = feats.reshape(-1, d)
    if not np.any(flat.std(axis=0) > 1e-6):  # a textureless image is one region, whatever K was asked for
        return np.ones((1, h, w), dtype=np.float32)
    rng = np.random.default_rng(seed)
    wanted = params.max_k if chosen else k
    # The sample holds at least K pixels, so a small fit_pixels never caps K. A tiny input has fewer working pixels
    # than feature dimensions (or than K): PCA and k-means are capped by it, and a K asked for is padded back below.
    fit_idx = rng.choice(flat.shape[0], size=min(max(params.fit_pixels, wanted), flat.shape[0]), replace=False)
    pca = PCA(n_components=min(params.pca_components, d, fit_idx.size), random_state=seed).fit(flat[fit_idx])
    reduced = pca.transform(flat)
    position = _position(fh, fw)
    k = min(wanted, fit_idx.size)
    if k == 1:
        return np.ones((1, h, w), dtype=np.float32)
    placed = np.hstack([reduced, position * np.float32(params.position_weight)])
    centers = KMeans(k, n_init=8, random_state=seed).fit(placed[fit_idx]).cluster_centers_
    # Position only steers where the centres go; pixels join the centre they look like, so a region nested inside
    # another (a disc on a background) is not cut along the line between the two centroids.
    scores = _coarse_scores(reduced, centers[:, : reduced.shape[1]], (fh, fw), params.score_smooth_sigma)
    refined = None
    if refine:
        fine_feats = _features(lab, gabor, fourier, params.fine_window, params.fine_stat_sigma, params)
        refined = _refine(fine_feats, scores, k, seed, params)
    if refined is None:
        if chosen:
            owner = _merged(scores.argmax(axis=0), k, reduced, pca, position, fit_idx, params,
                            copies.fitted(params.work_side))
            if owner is None:
                return np.ones((1, h, w), dtype=np.float32)
            scores = _merge_channels(scores, owner)
        margin = _margin(scores)
        if chosen:
            margin = margin[np.unique(margin.argmax(axis=0))]
        elif k < wanted:  # regions the image has no pixels for: no likelier anywhere than the least likely one found
            margin = np.concatenate([margin, np.repeat(margin.min(axis=0, keepdims=True), wanted - k, axis=0)])
        return _positive_winner(margin if margin.shape[1:] == (h, w) else _upsample(margin, h, w))
    if not chosen:
        return _one_hot(_cut(_margin(refined), copies, params, params.refine_side), np.arange(wanted), h, w)
    # The regions are merged as the graph cut leaves them. Over max_k labels the cut is the dearest step on large
    # photos, so it runs at no more than twice the working size; where that is smaller than the output's cut, the
    # output's cut runs once more, over the merged regions and only near their boundaries.
    count_side = min(2 * params.work_side, params.refine_side)
    labels = _cut(_margin(refined), copies, params, count_side)
    counted = _resample(labels, fh, fw)
    owner = _merged(counted, k, reduced, pca, position, fit_idx, params, copies.fitted(params.work_side))
    if owner is None:
        return np.ones((1, h, w), dtype=np.float32)
    # A label too thin to survive the resampling to the working size was not judged by the merge: its pixels take
    # the merged region of the working pixel they fall in.
    labels = np.where(owner[labels] >= 0, owner[labels], _resample(owner[counted], *labels.shape))
    if copies.fitted(count_side).shape != copies.fitted(params.refine_side).shape:
        labels = _cut(_margin(_merge_channels(refined, owner)), copies, params, params.refine_side, counted=labels)
    return _one_hot(labels, np.unique(labels), h, w)


def _margin(scores: np.ndarray) -> np.ndarray:
    """(K, h, w) each channel's score minus the best rival's: positive only for the winner."""
    order = np.sort(scores, axis=0)
    rival = np.where(scores == order[-1], order[-2], order[-1])
    return (scores - rival).astype(np.float32)


def _merged(labels: np.ndarray, k: int, reduced: np.ndarray, pca: PCA, position: np.ndarray, fit_idx: np.ndarray,
            params: ClassicalParams, lab: np.ndarray) -> np.ndarray | None:
    """Lookup table from the over-segmentation's labels to the chosen regions (:mod:`.merge`; -1 for labels absent
    from ``labels``), or ``None`` when the image is one texture: when every label present is merged into one region
    or the merged partition is too weak (:func:`_one_region`). ``labels`` is at the working size, as is ``lab``, the
    Lab image whose flat regions are joined after the merge (:func:`_join_flat`); the PCA features are scaled to unit
    total variance, so the merge's distortion is relative to the image's own feature spread."""
    features = reduced / np.float32(np.sqrt(pca.explained_variance_.sum()))
    owner = merge_regions(features, labels, k, params.merge_distortion, _pixels_per_sample(labels.size, params))
    owner = _join_flat(owner, labels, lab)
    if owner.max() == 0:
        return None
    fh, fw = labels.shape
    placed = np.hstack([features, position * np.float32(params.k_select_position_weight)])
    sample = fit_idx[:params.k_select_pixels]
    smooth = _smooth_maps(placed.T.reshape(-1, fh, fw), params.k_select_sigma).reshape(placed.shape[1], -1).T
    return None if _one_region(smooth[sample], owner[labels.ravel()[sample]], params) else owner


def _join_flat(owner: np.ndarray, labels: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """``owner`` (the merge's lookup table from the over-segmentation's ``labels`` to regions) with the regions that
    are one flat colour joined; ``labels`` is at the working size of the Lab image ``lab``.

    Beside texture, a flat area (a white background, a letterbox bar, a transparent margin) is split: the wide
    windows that reach across its boundary see the texture's energy, so its strip along the boundary has features
    of its own, which standardising makes strong, and the merge keeps the strip apart (the same effect as in an
    image of flat tones, :func:`_flat_tones`). Its pixels say otherwise. A region is flat when, 2 px inside its
    edge (where the cut may have taken a few pixels of the neighbouring texture), no Lab channel spreads by more
    than ``_FLAT_REGION_SPREAD``; flat regions whose mean colours differ by less than a step (:func:`_join_tones`,
    four spreads plus the quantum) are one. No region of the DTD, Outex and photo mosaics has a flat neighbour by
    this test, so their partitions are unchanged (perf/RESULTS.md). A strip whose boundary with the texture lies
    more than the 2 px off is not flat by it and stays a region of its own."""
    merged = owner[labels]
    flat, means, counts, spreads = [], [], [], []
    for region in np.unique(merged[merged >= 0]):
        core = ndimage.binary_erosion(merged == region, iterations=_FLAT_REGION_EDGE)
        if not core.any():
            continue
        values = lab[core].astype(np.float32)
        spread = values.std(axis=0)
        if np.all(spread <= _FLAT_REGION_SPREAD):
            flat.append(int(region))
            means.append(values.mean(axis=0))
            counts.append(values.shape[0])
            spreads.append(spread)
    if len(flat) < 2:
        return owner
    limit = _FLAT_STEP * np.max(spreads, axis=0) + _FLAT_QUANTUM
    tone = _join_tones(np.stack(means), np.asarray(counts), limit, len(flat))
    first: dict[int, int] = {}
    target = {region: first.setdefault(int(t), region) for region, t in zip(flat, tone)}
    return renumbered(np.array([target.get(int(o), int(o)) for o in owner]))


def _pixels_per_sample(pixels: int, params: ClassicalParams) -> float:
    """Working pixels that count as one independent sample of the smoothed features in an image of ``pixels``
    working pixels: it counts as ``merge_samples`` samples at the full working size and in proportion to its side
    below it."""
    return params.work_side * np.sqrt(pixels) / params.merge_samples


def _flat_tones(lab: np.ndarray, params: ClassicalParams, most: int) -> np.ndarray | None:
    """(h, w) labels of the tones of an image of at least two flat tones (up to white pixel noise), at most ``most``
    of them (the closest merged first); ``None`` for any other image.

    Such an image has no texture. Its filter energies, spreads and binary patterns are zero except where a window
    straddles the boundary between two tones; standardising each map to unit variance makes that strip the
    strongest feature, so k-means splits boundary from rest and counting merges across it. The strip is as wide as
    the coarsest windows (tens of working pixels), so the maps alone cannot tell it from a small region of texture;
    the image as a whole can. Its regions are its tones.

    The pixel noise of each channel is read from the steps between neighbouring pixels (a Gaussian's deviation from
    their median absolute value; the steps across tone boundaries are too few to move it). A step of more than
    ``_FLAT_STEP`` deviations plus ``_FLAT_QUANTUM`` in any channel makes both pixels boundary pixels; the others fall
    into connected flat regions. The image is one of flat tones when the regions of at least one merge sample
    (:func:`_pixels_per_sample`) hold ``_FLAT_COVER`` of its pixels and none spreads about its mean colour by more
    than ``_FLAT_SPREAD`` times the pixel noise (plus the quantum): white noise differs as much between neighbours
    as across a region, while texture and shading vary more across it than from one pixel to the next. Regions
    whose mean colours differ by less than a step are one tone, and the pixels outside them join the nearest
    region. On the DTD and Outex mosaics, where two or more such regions are found they hold at most 91 % of the
    pixels, and where they hold 60 % or more they spread at least 3.2 times the noise; two or three flat tones with
    Gaussian noise up to 8 grey levels, or saved as JPEG, give at least 86 % and at most 0.9 times (perf/RESULTS.md)."""
    h, w = lab.shape[:2]
    planes = lab.transpose(2, 0, 1).astype(np.float32)
    steps = [np.abs(np.diff(planes, axis=axis)) for axis in (1, 2)]
    step_noise = 1.4826 * np.median(np.concatenate([s.reshape(3, -1) for s in steps], axis=1), axis=1)
    limit = _FLAT_STEP * step_noise + _FLAT_QUANTUM
    boundary = np.zeros((h, w), dtype=bool)
    for axis, step in zip((0, 1), steps):
        big = (step > limit[:, None, None]).any(axis=0)
        before = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        after = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        boundary[before] |= big
        boundary[after] |= big
    regions, n = ndimage.label(~boundary)
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    sizes[0] = 0  # the boundary pixels
    large = np.flatnonzero(sizes >= _pixels_per_sample(h * w, params))
    if len(large) < 2 or sizes[large].sum() < _FLAT_COVER * h * w:
        return None
    means = np.stack([ndimage.mean(lab[..., c], regions, large) for c in range(3)], axis=1)
    spreads = np.sqrt(np.stack([ndimage.variance(lab[..., c], regions, large) for c in range(3)], axis=1))
    if np.any(spreads > _FLAT_SPREAD * (step_noise / np.sqrt(2) + _FLAT_QUANTUM)):
        return None
    own = _join_tones(means, sizes[large], limit, len(large))  # the image's own tones, however many
    if own.max() == 0:  # one colour, parted only by lines or specks
        return None
    tone = np.zeros(n + 1, dtype=int)
    # joining goes on past the image's own tones only while there are more than ``most``, along the same order
    tone[large] = own if own.max() < most else _join_tones(means, sizes[large], limit, most)
    nearest = ndimage.distance_transform_edt(~np.isin(regions, large), return_distances=False, return_indices=True)
    return tone[regions[nearest[0], nearest[1]]]


def _join_tones(means: np.ndarray, counts: np.ndarray, limit: np.ndarray, most: int) -> np.ndarray:
    """Tone (0, 1, ... by first region) of each region of mean colour ``means`` and ``counts`` pixels: the two
    closest tones (largest per-channel difference in units of ``limit``) are joined while they differ by less than
    ``limit`` in every channel or there are more than ``most``."""
    members = [[i] for i in range(len(means))]
    colours = [means[i] for i in range(len(means))]
    weights = [float(counts[i]) for i in range(len(means))]
    while len(members) > 1:
        gaps = [(np.max(np.abs(colours[i] - colours[j]) / limit), i, j)
                for i in range(len(members)) for j in range(i + 1, len(members))]
        gap, i, j = min(gaps)
        if gap >= 1.0 and len(members) <= most:
            break
        colours[i] = (colours[i] * weights[i] + colours[j] * weights[j]) / (weights[i] + weights[j])
        weights[i] += weights[j]
        members[i] += members.pop(j)
        del colours[j], weights[j]
    tone = np.empty(len(means), dtype=int)
    for t, group in enumerate(sorted(members, key=min)):
        tone[group] = t
    return tone


def _tone_logits(tones: np.ndarray, k: int | None, copies: _LabCopies, refine: bool, params: ClassicalParams,
                 h: int, w: int) -> np.ndarray:
    """(K, H, W) ±1 logits of an image of flat tones (:func:`_flat_tones`): one region per tone, and with a K given
    beyond the tones the extra channels win no pixel. Where the output's cut is larger than the working size the
    tones' boundaries are cut again there, near where they lie, so they follow the colour edges (:func:`_cut`)."""
    count = int(tones.max()) + 1
    if refine and copies.fitted(params.refine_side).shape[:2] != tones.shape:
        # Each pixel as sure of its tone as pass 2 ever is of a region, so the cut keeps the tones and only moves
        # their boundaries onto the colour edges within a few working pixels.
        sure = np.where(np.arange(count)[:, None, None] == tones[None], _LOG_POSTERIOR_FLOOR, -_LOG_POSTERIOR_FLOOR)
        tones = _cut(sure.astype(np.float32), copies, params, params.refine_side, counted=tones)
    return _one_hot(tones, np.arange(count if k is None else k), h, w)


def _merge_channels(scores: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """(K', h, w) scores of the merged regions: each the best of its members' (``owner`` maps channel -> region; the
    channels of labels the merge did not see, -1, are dropped, so no region is born of one it never judged)."""
    return np.stack([scores[owner == r].max(axis=0) for r in range(owner.max() + 1)])


def _resample(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resampling of a label map to (h, w) (pixel centres)."""
    rows = ((np.arange(h) + 0.5) * labels.shape[0] / h).astype(int)
    cols = ((np.arange(w) + 0.5) * labels.shape[1] / w).astype(int)
    return labels[np.ix_(rows, cols)]


def _cut(margin: np.ndarray, copies: _LabCopies, params: ClassicalParams, side: int,
         counted: np.ndarray | None = None) -> np.ndarray:
    """(h, w) labels of the graph-cut partition (:mod:`.cut`) of the image's copy at ≤ ``side`` px.

    Pixels pass 2 left to pass 1 (margin ≥ ``_DECIDED`` nats) are fixed; the band around the boundaries is cut.
    Given ``counted``, a partition already cut at a smaller size, its labels are upsampled instead and only the
    pixels within ``recut_band`` px of its boundaries are cut again: the smaller cut has placed the boundaries, and
    the larger one only refines them to its pixels (re-deciding the whole band cost more and placed them no better)."""
    lab = copies.fitted(side)
    sh, sw = lab.shape[:2]
    if margin.shape[1:] != (sh, sw):
        margin = _upsample(margin, sh, sw)
    if counted is None:
        fixed = np.where(margin.max(axis=0) >= _DECIDED, margin.argmax(axis=0), -1)
    else:
        upsampled = _resample(counted, sh, sw)
        near = ndimage.distance_transform_edt(~label_boundaries(upsampled)) <= params.recut_band
        fixed = np.where(near, -1, upsampled)
    return cut_band(np.maximum(-margin, 0.0) * np.float32(params.cut_temperature), fixed, lab, params)


def _one_hot(labels: np.ndarray, used: np.ndarray, h: int, w: int) -> np.ndarray:
    """(len(used), H, W) ±1 logits of a partition, one channel per label in ``used``, upsampled to the input."""
    onehot = np.where(used[:, None, None] == labels[None], 1.0, -1.0).astype(np.float32)
    return onehot if labels.shape == (h, w) else _positive_winner(_upsample(onehot, h, w))


def _positive_winner(logits: np.ndarray) -> np.ndarray:
    """``logits`` with the best channel of every pixel that has none above 0 set to ``_TIE``, in place, so the static
    dustbin (0) never wins. Such pixels are few: where the best channels tie at a margin of 0 (two k-means centres
    scoring a periodic image alike) and between the samples of an upsampled map where the winners differ
    (interpolated, every channel can fall below 0). A tie goes to the first channel. Row blocks bound the temporary
    memory on a 12 MP output."""
    for top in range(0, logits.shape[1], _ROW_BLOCK):
        block = logits[:, top : top + _ROW_BLOCK]
        rows, cols = np.nonzero(block.max(axis=0) <= 0)
        block[block[:, rows, cols].argmax(axis=0), rows, cols] = _TIE
    return logits


def _upsample(maps: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of each (h, w) map to (H, W) float32 (PIL's 'F' mode: fast and one map at a time)."""
    out = np.empty((maps.shape[0], h, w), dtype=np.float32)
    for i, m in enumerate(maps):
        out[i] = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))
    return out
