"""Region descriptions for the classical segmenter, measured from the pixels (no material names it cannot know).

Each region 1..K of a label map is described in the ``Texture of <...>, <features>, <where>`` shape the VLM writes:

- colour: the region's mean CIE-Lab colour, named by the nearest entry (CIEDE2000) of a small named-colour table;
- scale: the energy-weighted mean frequency of a Gabor filter bank (constant relative bandwidth, so a natural
  1/f-spectrum texture weighs every octave alike and lands in the middle), in cycles per image side: a pattern
  whose wavelength is a small fraction of the image is "fine" — scale is relative to the picture, as a viewer sees it;
- orientation: the doubled-angle resultant of the Gabor energies over orientations (0 for isotropic texture, near 1
  for a grating); strong enough, its angle names the stripes, which run perpendicular to the frequency vector;
- contrast: the RMS of the CIE L* lightness inside the region;
- position: the region's extent and centroid ("left half", "top band", "centre", "whole image", ...), kept where the
  region fills most of that place or that place holds most of the region; a region in two bands at opposite edges is
  named by them ("top and bottom bands"), and one with no such place gets no position (a phrase placing it in the gap
  between its pieces would be false).

The spectrum of each region is taken from its own bounding box with the pixels outside the region set to the
region's mean and a Hann taper applied, so neighbouring regions and the boundary between them add no energy.
Everything is measured on bounded copies, so a 12 MP image costs little: the spectrum on a box-filtered copy (long
side ≤ :data:`WORK_SIDE`, anti-aliased so fine texture cannot alias into coarse), colour and contrast on a strided
sample of the original pixels (long side ≈ :data:`SAMPLE_SIDE`; averaging would wash out the contrast of a large
photo's fine texture). A region thin enough to fall between the pixels of either copy (a strip a few pixels wide on a
large photo) is measured from its own pixels instead: colour and contrast from them, the spectrum from its bounding
box (box-filtered the same way if larger, where it covers any part of a pixel), position and area from its mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab

from ..utils.image_ops import fitted_size
from . import gabor

# The describer's own working size, not ClassicalParams.work_side: like its filter bank (:mod:`.gabor`'s defaults),
# it does not follow the segmenter's settings, so a region is described alike whatever the segmenter was set to.
WORK_SIDE = 256
SAMPLE_SIDE = 512  # colour and contrast are read from a strided (not averaged) sample of about this size
# Named colours (sRGB); the nearest in CIEDE2000 names a region's mean colour.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "dark grey": (70, 70, 70),
    "grey": (128, 128, 128),
    "light grey": (190, 190, 190),
    "white": (245, 245, 245),
    "red": (200, 30, 30),
    "dark red": (110, 20, 20),
    "orange": (235, 130, 30),
    "yellow": (235, 215, 50),
    "olive": (120, 120, 30),
    "green": (50, 160, 50),
    "dark green": (25, 80, 30),
    "teal": (20, 125, 125),
    "light blue": (130, 180, 230),
    "blue": (40, 70, 200),
    "navy": (20, 30, 90),
    "purple": (120, 50, 150),
    "pink": (235, 150, 185),
    "brown": (115, 75, 40),
    "beige": (210, 185, 145),
}
# Centre frequencies of the shared Gabor bank (:mod:`.gabor`), in cycles per image long side (ratio 1.5).
BAND_CYCLES = tuple(4.0 * 1.5**i for i in range(10))
FINE_CYCLES = 32.0  # wavelength < 1/32 of the long side: fine
COARSE_CYCLES = 12.0  # wavelength > 1/12 of the long side: coarse
MIN_ANISOTROPY = 0.35  # doubled-angle resultant above which a direction dominates
FLAT_L_STD = 1.5  # L* RMS below which a region shows no pattern at all
CONTRAST_LEVELS = ((8.0, "low"), (20.0, "medium"))  # L* RMS thresholds; above the last: high
# A position phrase is kept only where the region fills at least this share of its place, or its place holds this
# share of the region, whichever is smaller: from the extent and centroid alone, a region in separate pieces (a
# letterboxed photo's top and bottom bars) would be named by the empty gap between them ("centre"), while a large
# compact region spills out of the third it is named by.
PLACE_SHARE = 0.5
# The most of a region the middle third may hold for its pieces at both ends to be named "top and bottom bands".
GAP_SHARE = 0.1
THIRDS = ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0))
EMPTY_REGION = "Empty region"  # the description of a region that wins no pixel (its number is its place)


@dataclass(frozen=True)
class RegionProperties:
    """What was measured for one region; :func:`describe_regions` turns it into a sentence."""

    colour: str
    scale: str  # "fine" / "medium" / "coarse", or "uniform" when there is no pattern
    orientation: str  # "vertical streaks", "horizontal stripes", "diagonal stripes ...", "no dominant direction"
    contrast: str  # "low" / "medium" / "high"
    position: str  # "left half", "top band", "centre", "whole image", "top and bottom bands", ...; "" for none
    area_fraction: float

    def sentence(self) -> str:
        where = {"whole image": ", across the whole image", "": ""}.get(self.position, f", in the {self.position}")
        if self.scale == "uniform":
            return f"Texture of uniform {self.colour}, no visible pattern{where}"
        return f"Texture of {self.colour} {self.scale} grain, {self.orientation}, {self.contrast} contrast{where}"


def describe_regions(image: np.ndarray, label_map: np.ndarray, count: int = 0) -> list[str]:
    """One description per region 1..K of ``label_map`` (0 = unassigned) of the (H, W, 3) uint8 ``image``: K is
    its largest label, or ``count`` (the regions segmented) where larger; a region without pixels is
    :data:`EMPTY_REGION`."""
    return [p.sentence() if p else EMPTY_REGION for p in measure_regions(image, label_map, count)]


def measure_regions(image: np.ndarray, label_map: np.ndarray, count: int = 0) -> list[RegionProperties | None]:
    """Measured properties of regions 1..K, K as in :func:`describe_regions` (``None`` for a region with no
    pixels)."""
    image, labels = np.asarray(image), np.asarray(label_map)
    if image.ndim != 3 or image.shape[2] != 3 or labels.shape != image.shape[:2]:
        raise ValueError(f"need an (H, W, 3) image and an (H, W) label map, got {image.shape} and {labels.shape}")
    k = max(int(labels.max()) if labels.size else 0, count)
    rgb, small_labels = _working_copy(image, labels)
    lab = rgb2lab(rgb)
    stride = -(-max(labels.shape) // SAMPLE_SIDE)  # colour and contrast from unaveraged pixels, as a viewer sees them
    sample_lab, sample_labels = rgb2lab(image[::stride, ::stride]), labels[::stride, ::stride]
    out: list[RegionProperties | None] = []
    for region in range(1, k + 1):
        mask, sample = small_labels == region, sample_labels == region
        if mask.any() and sample.any():
            out.append(_properties(sample_lab[sample], lab[..., 0], mask, max(rgb.shape[:2]), mask))
        else:
            out.append(_measured_in_full(image, labels, region))
    return out


def _properties(pixels: np.ndarray, lightness: np.ndarray, inside: np.ndarray, side: float,
                extent: np.ndarray) -> RegionProperties:
    """A region's properties from its (N, 3) Lab ``pixels`` (colour, contrast), the L* map ``lightness`` with the
    region's mask ``inside`` on it at ``side`` px per image long side (spectrum), and its mask ``extent`` over the
    whole image (position, area)."""
    l_std = float(pixels[:, 0].std())
    cycles, anisotropy, angle = _spectral_summary(lightness, inside, side)
    flat = l_std < FLAT_L_STD
    return RegionProperties(
        colour=colour_name(pixels.mean(axis=0)),
        scale="uniform" if flat else scale_name(cycles),
        orientation="no dominant direction" if flat else orientation_name(anisotropy, angle),
        contrast=contrast_name(l_std),
        position=position_name(extent),
        area_fraction=float(extent.mean()),
    )


def _measured_in_full(image: np.ndarray, labels: np.ndarray, region: int) -> RegionProperties | None:
    """Properties of a region the bounded copies miss, from the input's own pixels; ``None`` when it has none.

    Its colour and contrast are read from its pixels (a strided sample of at most ``SAMPLE_SIDE²``), its spectrum
    from its bounding box. A box larger than ``WORK_SIDE`` (a thin diagonal region spans the image) is box-filtered
    like the working copy, with the region's mask taken where it covers any part of a pixel: nearest-neighbour
    sampling would miss it again."""
    extent = labels == region
    if not extent.any():
        return None
    rows, cols = np.flatnonzero(extent.any(axis=1)), np.flatnonzero(extent.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    crop, inside = image[box].astype(np.uint8, copy=False), extent[box]
    own = crop[inside]
    pixels = rgb2lab(own[:: -(-len(own) // SAMPLE_SIDE**2)])
    h, w = inside.shape
    small_h, small_w = fitted_size(h, w, WORK_SIDE)
    if (small_h, small_w) != (h, w):
        crop = np.asarray(Image.fromarray(crop).resize((small_w, small_h), Image.Resampling.BOX))
        coverage = Image.fromarray(inside.astype(np.uint8) * 255).resize((small_w, small_h), Image.Resampling.BOX)
        inside = np.asarray(coverage) > 0
    side = max(labels.shape) * max(small_h, small_w) / max(h, w)  # the image's long side in the copy's pixels
    return _properties(pixels, rgb2lab(crop)[..., 0], inside, side, extent)


def _working_copy(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box-filtered (anti-aliased) RGB and nearest-neighbour labels at long side ≤ :data:`WORK_SIDE`."""
    h, w = labels.shape
    small_h, small_w = fitted_size(h, w, WORK_SIDE)
    if (small_h, small_w) == (h, w):
        return image.astype(np.uint8, copy=False), labels
    rgb = np.asarray(Image.fromarray(image.astype(np.uint8, copy=False)).resize((small_w, small_h),
                                                                               Image.Resampling.BOX))
    scale = WORK_SIDE / max(h, w)
    rows = np.minimum(((np.arange(small_h) + 0.5) / scale).astype(int), h - 1)
    cols = np.minimum(((np.arange(small_w) + 0.5) / scale).astype(int), w - 1)
    return rgb, labels[np.ix_(rows, cols)]


def colour_name(lab: np.ndarray) -> str:
    """Nearest named colour (CIEDE2000) to a CIE-Lab colour."""
    names = list(NAMED_COLOURS)
    table = rgb2lab(np.array([[NAMED_COLOURS[n] for n in names]], dtype=np.uint8))[0]
    distances = deltaE_ciede2000(np.broadcast_to(np.asarray(lab, dtype=np.float64), table.shape), table)
    return names[int(np.argmin(distances))]


def _spectral_summary(lightness: np.ndarray, mask: np.ndarray, side: int) -> tuple[float, float, float]:
    """(energy-weighted mean frequency in cycles per long side, anisotropy 0..1, dominant frequency angle in rad).

    The angle is that of the frequency vector (x right, y down): 0 means intensity varies along x.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    values, inside = lightness[box], mask[box]
    patch = np.where(inside, values - values[inside].mean(), 0.0)
    patch *= np.outer(np.hanning(patch.shape[0] + 2)[1:-1], np.hanning(patch.shape[1] + 2)[1:-1])
    power = np.abs(np.fft.fft2(patch)) ** 2
    fy = np.fft.fftfreq(patch.shape[0])[:, None] * side
    fx = np.fft.fftfreq(patch.shape[1])[None, :] * side
    nyquist = side / 2
    energy = np.zeros((len(BAND_CYCLES), gabor.N_ORIENTATIONS))
    usable = [f for f in BAND_CYCLES if f <= 0.9 * nyquist]
    if usable:  # every band at once: (F, O, h, w) power-weighted pass-bands, the mirrored half of a real signal too
        bands = gabor.bank(fy, fx, usable, symmetric=True)
        energy[: len(usable)] = np.einsum("fohw,hw->fo", bands * bands, power.astype(np.float32))
    total = energy.sum()
    if total <= 0:
        return 0.0, 0.0, 0.0
    per_band = energy.sum(axis=1)
    cycles = float(np.exp((per_band * np.log(BAND_CYCLES)).sum() / total))
    per_orientation = energy.sum(axis=0)
    doubled = (per_orientation * np.exp(2j * gabor.orientations())).sum() / total
    return cycles, float(abs(doubled)), float(np.angle(doubled) / 2) % np.pi


def scale_name(cycles_per_side: float) -> str:
    if cycles_per_side > FINE_CYCLES:
        return "fine"
    return "coarse" if cycles_per_side < COARSE_CYCLES else "medium"


def orientation_name(anisotropy: float, angle: float) -> str:
    """Name the stripes, which run perpendicular to the dominant frequency vector at ``angle`` (x right, y down)."""
    if anisotropy < MIN_ANISOTROPY:
        return "no dominant direction"
    sector = int(np.round(angle / (np.pi / 4))) % 4
    return ("vertical streaks", "diagonal stripes rising to the right", "horizontal stripes",
            "diagonal stripes falling to the right")[sector]


def contrast_name(l_std: float) -> str:
    for limit, name in CONTRAST_LEVELS:
        if l_std < limit:
            return name
    return "high"


def position_name(mask: np.ndarray) -> str:
    """Where a region lies, in the image's own thirds, or "" when no one place says it (the sentence then makes no
    claim). The place is chosen from the region's extent (bounding box, area) and centroid; it is named only if the
    region fills most of it or it holds most of the region (:data:`PLACE_SHARE`), so a region in pieces is never
    placed in the gap between them, and such a region is named by its pieces where they are two bands along opposite
    edges."""
    h, w = mask.shape
    area = float(mask.mean())
    if area >= 0.9:
        return "whole image"
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom = rows[0] / h, (rows[-1] + 1) / h
    left, right = cols[0] / w, (cols[-1] + 1) / w
    yy, xx = np.nonzero(mask)
    ys, xs = (yy + 0.5) / h, (xx + 0.5) / w
    cy, cx = ys.mean(), xs.mean()
    full = (0.0, 1.0)
    if right - left >= 0.9 and bottom - top < 0.9:  # spans the width: a half or a band
        name, span = _half_or_band(top, bottom, area, ("top", "middle", "bottom"), cy)
        place = (span, full)
    elif bottom - top >= 0.9 and right - left < 0.9:  # spans the height
        name, span = _half_or_band(left, right, area, ("left", "middle", "right"), cx)
        place = (full, span)
    else:
        row, col = min(int(cy * 3), 2), min(int(cx * 3), 2)
        place = (THIRDS[row], THIRDS[col])
        row_name, col_name = ("top", "middle", "bottom")[row], ("left", "centre", "right")[col]
        if row == 1 and col == 1:
            name = "centre"
        else:
            name = f"{row_name}-{col_name} corner" if row != 1 and col != 1 else f"{row_name} {col_name}"
    (y0, y1), (x0, x1) = place
    inside = np.count_nonzero((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1))
    if inside >= PLACE_SHARE * min(ys.size, (y1 - y0) * (x1 - x0) * h * w):
        return name
    if _bands_at_both_ends(mask, ys):
        return "top and bottom bands"
    if _bands_at_both_ends(mask.T, xs):
        return "left and right bands"
    return ""


def _bands_at_both_ends(mask: np.ndarray, ys: np.ndarray) -> bool:
    """Whether ``mask`` is two bands across its width, one in its top third and one in its bottom third, with
    (nearly) nothing between them; ``ys`` are its pixels' relative row positions."""
    h, w = mask.shape
    ends = (mask[: max(h // 3, 1)], mask[h - max(h // 3, 1):])
    spans = all(np.count_nonzero(end.any(axis=0)) >= 0.9 * w for end in ends)
    return spans and np.mean((ys >= 1 / 3) & (ys < 2 / 3)) <= GAP_SHARE


def _half_or_band(start: float, end: float, area: float, names: tuple[str, str, str],
                  centre: float) -> tuple[str, tuple[float, float]]:
    """A region spanning the image one way: a "half" if it fills about half from one edge, else a band; with the
    span across the other way (as fractions) that the name claims."""
    if 0.35 <= area <= 0.65 and (start <= 0.05) != (end >= 0.95):
        return (f"{names[0]} half", (0.0, 0.5)) if start <= 0.05 else (f"{names[2]} half", (0.5, 1.0))
    third = min(int(centre * 3), 2)
    return f"{names[third]} band", THIRDS[third]
