"""Score a scene 0-100 from its label map alone: is it a good multi-texture training image?

Everything is computed from one :class:`LabelStats` pass (class areas and the 4-neighbour boundary edges between
classes, via ``np.bincount``), so scoring a 1024x768 map costs a few milliseconds and needs no image or GPU.
Each component is a separate function returning a value in [0, 1]; :func:`score_scene` weighs them as configured:
``score = 100 * weighted_mean(components) - sum(penalty_points * penalty)``, clipped to [0, 100].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from .config import ScoringConfig
from .vocabulary import Vocabulary


@dataclass(frozen=True)
class LabelStats:
    """Per-class areas and class-to-class boundary edges of one label map.

    ``edge_pair`` holds, for every pair of 4-neighbouring pixels with different classes, the canonical pair id
    ``min * C + max``; ``edge_index`` is the flat index of the edge's first (left or top) pixel, from which
    :meth:`edge_positions` derives coordinates only for the edges a component needs.
    """

    height: int
    width: int
    area: np.ndarray  # (C,) fraction of the image per class id
    boundary: np.ndarray  # (C, C) symmetric count of boundary edges between two classes
    edge_pair: np.ndarray
    edge_index: np.ndarray

    @property
    def n_classes(self) -> int:
        return len(self.area)

    def edge_positions(self, selector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) of the selected edges' first pixels."""
        return np.divmod(self.edge_index[selector], self.width)


def label_stats(label: np.ndarray, n_classes: int) -> LabelStats:
    """Compute :class:`LabelStats`; a label outside ``0..n_classes-1`` raises :class:`DatasetError`.

    Works on the flat (contiguous) map: horizontal neighbours are ``i, i+1`` (minus the row-end wrap-arounds),
    vertical ones ``i, i+W``; this avoids 2-D fancy indexing, which dominates the cost otherwise.
    """
    if label.ndim != 2 or min(label.shape) < 2:
        raise DatasetError(f"label map must be a 2-D array of at least 2x2, got shape {label.shape}")
    if label.dtype.kind not in "ui":
        raise DatasetError(f"label map must hold integer class ids, got dtype {label.dtype}")
    if label.dtype.kind == "i" and label.min() < 0:
        raise DatasetError("label map has negative class ids")
    top = int(label.max())
    if top >= n_classes:  # before bincount, which would allocate a count for every id up to this one
        raise DatasetError(f"label map has class id {top}; this vocabulary has ids 0..{n_classes - 1}")
    h, w = label.shape
    flat = np.ascontiguousarray(label).ravel()
    counts = np.bincount(flat, minlength=n_classes)
    horizontal = np.flatnonzero(flat[:-1] != flat[1:])
    horizontal = horizontal[horizontal % w != w - 1]  # the last pixel of a row has no right neighbour
    vertical = np.flatnonzero(flat[:-w] != flat[w:])
    first = np.concatenate([horizontal, vertical])
    a = flat[first].astype(np.int64)
    b = np.concatenate([flat[horizontal + 1], flat[vertical + w]]).astype(np.int64)
    edge_pair = np.minimum(a, b) * n_classes + np.maximum(a, b)
    boundary = np.bincount(edge_pair, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return LabelStats(
        height=h,
        width=w,
        area=counts / float(h * w),
        boundary=boundary + boundary.T,
        edge_pair=edge_pair,
        edge_index=first,
    )


def _ramp(x: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear in between."""
    return float(np.clip((x - low) / (high - low), 0.0, 1.0))


def large_texture_regions(stats: LabelStats, vocab: Vocabulary, min_area: float) -> np.ndarray:
    """Ids of texture classes covering at least ``min_area`` of the image, largest first."""
    ids = np.flatnonzero(vocab.is_texture & (stats.area >= min_area))
    return ids[np.argsort(-stats.area[ids], kind="stable")]


def region_count_score(n_regions: int, ideal: tuple[int, int]) -> float:
    """Full marks for ``ideal[0]..ideal[1]`` large texture regions.

    Below the range it is ``0.5 * n / low`` (partial credit: one texture is not a multi-texture scene); above it,
    each extra region costs 0.25, because a scene split into many texture classes is rarely a clean one.
    """
    low, high = ideal
    if n_regions < low:
        return n_regions / low * 0.5
    if n_regions <= high:
        return 1.0
    return max(0.0, 1.0 - 0.25 * (n_regions - high))


def balance_score(region_areas: np.ndarray) -> float:
    """Normalised entropy of the large regions' areas: 1 for equal sizes, towards 0 when one region dominates.

    Fewer than two regions give 0: there is nothing to balance, and the region count already scores that case.
    """
    areas = np.asarray(region_areas, dtype=np.float64)
    if len(areas) < 2:
        return 0.0
    p = areas / areas.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


def _texture_edges(stats: LabelStats, vocab: Vocabulary) -> np.ndarray:
    """Boolean selector of the edges whose both sides are texture classes."""
    c = stats.n_classes
    a, b = stats.edge_pair // c, stats.edge_pair % c
    return vocab.is_texture[a] & vocab.is_texture[b]


def boundary_length_score(stats: LabelStats, vocab: Vocabulary, bounds: tuple[float, float, float]) -> float:
    """Length of the texture-texture boundaries in units of (height + width), mapped through ``(low, high, max)``.

    Too little boundary means the textures hardly meet (nothing to learn about separating them); far too much means
    they are shredded into fragments. One straight cut across the image is about 0.5 (H + W).
    """
    low, high, top = bounds
    length = int(_texture_edges(stats, vocab).sum()) / float(stats.height + stats.width)
    if length <= high:
        return _ramp(length, 0.0, low)
    return 1.0 - _ramp(length, high, top)


def boundary_straightness_score(stats: LabelStats, vocab: Vocabulary) -> float:
    """How straight the texture-texture boundaries are, in [0, 1] (0 when there are none).

    For each pair of touching texture classes, a straight (or monotone staircase) boundary spanning a ``w x h`` box
    has exactly ``w + h`` 4-neighbour edges; a ragged one has many more. The score is
    ``sum(min(E, w + h)) / sum(E)`` over pairs with ``E`` edges, i.e. the edge-weighted mean of
    ``min(1, (w + h) / E)``. A closed smooth contour (a blob inside another texture) scores about 0.5.
    """
    sel = _texture_edges(stats, vocab)
    if not sel.any():
        return 0.0
    pair_ids, pair = np.unique(stats.edge_pair[sel], return_inverse=True)
    y, x = stats.edge_positions(sel)
    n = len(pair_ids)
    counts = np.bincount(pair, minlength=n)
    y0, x0 = np.full(n, np.iinfo(np.int64).max), np.full(n, np.iinfo(np.int64).max)
    y1, x1 = np.full(n, -1), np.full(n, -1)
    np.minimum.at(y0, pair, y)
    np.minimum.at(x0, pair, x)
    np.maximum.at(y1, pair, y)
    np.maximum.at(x1, pair, x)
    span = (y1 - y0 + 1) + (x1 - x0 + 1)
    return float(np.minimum(counts, span).sum() / counts.sum())


def coverage_score(stats: LabelStats, vocab: Vocabulary, bounds: tuple[float, float]) -> float:
    """Fraction of the image covered by texture classes, ramped from ``bounds[0]`` (0) to ``bounds[1]`` (1)."""
    return _ramp(float(stats.area[vocab.is_texture].sum()), *bounds)


def clutter_penalty(stats: LabelStats, vocab: Vocabulary, cfg: ScoringConfig) -> float:
    """Object clutter in [0, 1]: half from object area, half from the number of distinct object classes.

    Both halves grow with every added object (area always, count when its class is new), so adding clutter can
    only raise the penalty, until each half saturates at ``clutter_area_max`` / ``clutter_classes_max``.
    """
    area = stats.area[vocab.is_object]
    n_classes = int((area >= cfg.clutter_min_area).sum())
    return 0.5 * min(1.0, float(area.sum()) / cfg.clutter_area_max) + 0.5 * min(
        1.0, n_classes / cfg.clutter_classes_max
    )


def ambiguous_penalty(stats: LabelStats, vocab: Vocabulary, cfg: ScoringConfig) -> float:
    """Area of ambiguous classes (surface or thing depending on the scene), saturating at ``ambiguous_area_max``."""
    return min(1.0, float(stats.area[vocab.is_ambiguous].sum()) / cfg.ambiguous_area_max)


@dataclass(frozen=True)
class SceneScore:
    total: float  # 0..100, rounded to 2 decimals so re-runs write identical metadata
    components: dict[str, float]  # every component and penalty in [0, 1]


def score_scene(stats: LabelStats, vocab: Vocabulary, cfg: ScoringConfig) -> SceneScore:
    """Weigh all components into one 0-100 score (see the module docstring)."""
    large = large_texture_regions(stats, vocab, cfg.large_region_min_area)
    components = {
        "region_count": region_count_score(len(large), cfg.ideal_region_count),
        "balance": balance_score(stats.area[large]),
        "boundary_length": boundary_length_score(stats, vocab, cfg.boundary_length),
        "boundary_straightness": boundary_straightness_score(stats, vocab),
        "coverage": coverage_score(stats, vocab, cfg.coverage),
    }
    penalties = {"clutter": clutter_penalty(stats, vocab, cfg), "ambiguous": ambiguous_penalty(stats, vocab, cfg)}
    total = sum(cfg.weights[k] * v for k, v in components.items()) / sum(cfg.weights.values()) * 100.0
    total -= sum(cfg.penalties[k] * v for k, v in penalties.items())
    rounded = {k: round(v, 4) for k, v in {**components, **penalties}.items()}
    return SceneScore(total=round(float(np.clip(total, 0.0, 100.0)), 2), components=rounded)
