"""Which protocol scores a sample, decided in one place: ours (:mod:`.metrics`) or the published evaluator's
(:mod:`.published_protocol`). Both build on the primitives in :mod:`.metrics`; this module sits above the two, so neither
imports the other."""

from __future__ import annotations

import numpy as np

from .metrics import SampleScore, label_map_notes, score_ours, scored_regions

PROTOCOLS = ("ours", "published")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def scored_k_gt(gt_masks: np.ndarray, protocol: str = "ours") -> int:
    """K_gt as ``protocol``'s scorer records it: ours counts the regions of its first-mask-wins label map, the
    published one every kept mask. An oracle method is told this K, so it is told the K it is scored against."""
    _check_protocol(protocol)
    if protocol == "published":
        from .published_protocol import published_k_gt

        return published_k_gt(gt_masks)
    return len(scored_regions(gt_masks))


def gt_notes(gt_masks: np.ndarray, protocol: str = "ours") -> dict[int, str]:
    """The GT masks that are no region of the ground truth ``protocol``'s scorer builds, each with why (a template
    naming the mask as ``{mask}``), for the load-time warnings: the two protocols resolve overlaps and empty masks
    differently, so a warning true of one is false of the other."""
    _check_protocol(protocol)
    if protocol == "published":
        from .published_protocol import published_gt_notes

        return published_gt_notes(gt_masks)
    return label_map_notes(gt_masks)


def score_logits(logits: np.ndarray, gt_masks: np.ndarray, protocol: str = "ours") -> tuple[SampleScore, np.ndarray]:
    """Score a method's ``(K, H, W)`` logits against ``gt_masks``; returns (score, label map).

    ``protocol="ours"`` partitions with the static dustbin, every emitted channel a predicted region.
    ``protocol="published"`` scores the published evaluator's way (1008² maps, its GT and padding rules; see
    :mod:`detecture.benchmark.published_protocol`); ``logits`` are then best given at model resolution, as the
    published code upsampled them."""
    if protocol == "published":
        from .published_protocol import score_published  # torch: not loaded for our protocol's CPU-only runs

        return score_published(logits, gt_masks)
    _check_protocol(protocol)
    return score_ours(logits, gt_masks)
