"""Which protocol scores a sample, decided in one place: ours (:mod:`.metrics`) or the published evaluator's
(:mod:`.published_protocol`). Both build on the primitives in :mod:`.metrics`; this module sits above the two, so neither
imports the other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import SampleScore, gt_label_map, label_map_notes, score_ours, scored_regions

PROTOCOLS = ("ours", "published")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


@dataclass(frozen=True)
class GroundTruth:
    """A sample's ground truth as ``protocol``'s scorer builds it from the GT ``masks``: its label map ``labels``
    (ours: the first mask wins an overlap; published: 1008², the last mask wins) and ``k_gt``, K_gt as the scorer
    records it (ours counts the regions of its label map, the published one every kept mask; an oracle method is
    told this K, so it is told the K it is scored against). The load-time warnings, the K an oracle is told and the
    score all read this one map, so build it once per sample (:func:`ground_truth`): the published map resizes
    every mask to 1008²."""

    protocol: str
    masks: np.ndarray
    labels: np.ndarray
    k_gt: int

    def notes(self) -> dict[int, str]:
        """The GT masks that are no region of this ground truth, each with why (a template naming the mask as
        ``{mask}``), for the load-time warnings: the two protocols resolve overlaps and empty masks differently, so a
        warning true of one is false of the other."""
        if self.protocol == "published":
            from .published_protocol import published_gt_notes

            return published_gt_notes(self.masks, self.labels)
        return label_map_notes(self.masks, self.labels)


def ground_truth(gt_masks: np.ndarray, protocol: str = "ours") -> GroundTruth:
    """The ground truth ``protocol``'s scorer builds from ``(K, H, W)`` GT masks."""
    _check_protocol(protocol)
    masks = np.asarray(gt_masks, dtype=bool)
    if protocol == "published":
        from .published_protocol import published_gt  # torch: not loaded for our protocol's CPU-only runs

        return GroundTruth(protocol, masks, *published_gt(masks))
    labels = gt_label_map(masks)
    return GroundTruth(protocol, masks, labels, len(scored_regions(labels, len(masks))))


def score_against(logits: np.ndarray, truth: GroundTruth) -> tuple[SampleScore, np.ndarray]:
    """Score a method's ``(K, H, W)`` logits against ``truth``; returns (score, label map).

    Ours partitions with the static dustbin, every emitted channel a predicted region. The published protocol scores
    the published evaluator's way (1008² maps, its GT and padding rules; see
    :mod:`detecture.benchmark.published_protocol`); ``logits`` are then best given at model resolution, as the
    published code upsampled them."""
    if truth.protocol == "published":
        from .published_protocol import score_published

        return score_published(logits, truth.labels, truth.k_gt)
    return score_ours(logits, truth.labels)


def score_logits(logits: np.ndarray, gt_masks: np.ndarray, protocol: str = "ours") -> tuple[SampleScore, np.ndarray]:
    """:func:`score_against` the ground truth of ``gt_masks``, for a caller that needs nothing else of it."""
    return score_against(logits, ground_truth(gt_masks, protocol))
