"""Counting by merging: how the classical segmenter chooses K.

The image is over-segmented into ``max_k`` regions, and adjacent regions are then merged while merging shortens the
description of the features: the lossy coding length of each region's features as one Gaussian, plus the bits
that say which region each pixel belongs to (Ma, Derksen, Hong & Wright, "Segmentation of multivariate mixed data
via lossy data coding and compression", TPAMI 2007; merged over adjacent regions as in Yang, Wright, Ma & Sastry,
"Unsupervised segmentation of natural images via lossy data compression", CVIU 2008). Two parts of one texture
(shading or perspective across it) code more cheaply together than apart; two textures do not.

Why not a clustering index: on the same features, the merging counted the held-out DTD photo mosaics right more
often than the Calinski–Harabasz index of a pixel sample, with Outex unchanged (perf/RESULTS.md, eighth round). An
index scores one clustering of a pixel sample at a time; the merging weighs each pair of adjacent regions of the
final partition by what they hold, so a large region and a small one are compared on their own evidence.
"""

from __future__ import annotations

import numpy as np


def coding_length(count: float, total: np.ndarray, scatter: np.ndarray, distortion: float,
                  pixels_per_sample: float, image_pixels: float) -> float:
    """Nats to code one region's features up to mean squared error ``distortion²`` (Ma et al., eq. 6 with the mean
    coded), plus its pixels' membership. ``total`` and ``scatter`` are the sum and the sum of outer products of the
    region's ``count`` feature vectors.

    Smoothed features are not independent from pixel to pixel, so every ``pixels_per_sample`` pixels count as one
    sample; without it the gain of keeping two regions apart grows with their area and nothing merges."""
    dims = total.shape[0]
    samples = count / pixels_per_sample
    mean = total / count
    covariance = scatter / count - np.outer(mean, mean)
    _, logdet = np.linalg.slogdet(np.eye(dims) + dims / distortion**2 * covariance)
    return float((dims + samples) / 2 * logdet + dims / 2 * np.log1p(mean @ mean / distortion**2)
                 - samples * np.log(count / image_pixels))


def merge_regions(features: np.ndarray, labels: np.ndarray, n_labels: int, distortion: float,
                  pixels_per_sample: float) -> np.ndarray:
    """A lookup table from each label 0..``n_labels``-1 to its merged region (0..K'-1, by smallest member label).

    ``labels`` is (h, w), ``features`` (h·w, D). The pair of adjacent regions whose merge shortens the total coding
    length most is merged, and again, until no merge shortens it. Labels absent from ``labels`` map to -1: the merge
    has no pixels to judge them by, so they are no region (a region of their own would count one the image does not
    show)."""
    flat = labels.ravel()
    data = features.astype(np.float64, copy=False)
    stats: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
    for label in np.unique(flat):
        inside = data[flat == label]
        stats[int(label)] = (float(inside.shape[0]), inside.sum(axis=0), inside.T @ inside)
    lengths = {r: coding_length(*s, distortion, pixels_per_sample, flat.size) for r, s in stats.items()}
    adjacent = _adjacent_pairs(labels)
    owner = np.full(n_labels, -1)
    owner[list(stats)] = list(stats)
    while adjacent:
        best_gain, best_pair, best = 0.0, None, None
        for a, b in adjacent:
            merged = tuple(x + y for x, y in zip(stats[a], stats[b]))
            length = coding_length(*merged, distortion, pixels_per_sample, flat.size)
            gain = lengths[a] + lengths[b] - length
            if gain > best_gain:
                best_gain, best_pair, best = gain, (a, b), (merged, length)
        if best_pair is None:
            break
        keep, gone = best_pair
        stats[keep], lengths[keep] = best
        del stats[gone], lengths[gone]
        owner[owner == gone] = keep
        adjacent = {tuple(sorted((keep if a == gone else a, keep if b == gone else b))) for a, b in adjacent} - {
            (keep, keep)}
    return renumbered(owner)


def renumbered(owner: np.ndarray) -> np.ndarray:
    """``owner``, a lookup table from labels to region ids, with the ids numbered 0..K'-1 in their order (a region
    merged into its smallest member label keeps that order); -1, a label with no region, stays -1."""
    present = owner >= 0
    owner[present] = np.unique(owner[present], return_inverse=True)[1]
    return owner


def _adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a < b) of labels that touch across a horizontal or vertical pixel edge."""
    pairs = set()
    for here, there in ((labels[:, 1:], labels[:, :-1]), (labels[1:], labels[:-1])):
        differ = here != there
        low, high = np.minimum(here[differ], there[differ]), np.maximum(here[differ], there[differ])
        pairs.update(zip(low.tolist(), high.tolist()))
    return pairs
