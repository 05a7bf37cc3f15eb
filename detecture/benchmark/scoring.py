"""Which protocol scores a sample, decided in one place: ours (:mod:`.metrics`) or the published evaluator's
(:mod:`.published_protocol`). Both build on the primitives in :mod:`.metrics`; this module sits above the two, so neither
imports the other."""

from __future__ import annotations

import numpy as np

from .metrics import SampleScore, score_ours

PROTOCOLS = ("ours", "published")


def score_logits(logits: np.ndarray, gt_masks: np.ndarray, protocol: str = "ours") -> tuple[SampleScore, np.ndarray]:
    """Score a method's ``(K, H, W)`` logits against ``gt_masks``; returns (score, label map).

    ``protocol="ours"`` partitions with the static dustbin, every emitted channel a predicted region.
    ``protocol="published"`` scores the published evaluator's way (1008² maps, its GT and padding rules; see
    :mod:`detecture.benchmark.published_protocol`); ``logits`` are then best given at model resolution, as the
    published code upsampled them."""
    if protocol == "published":
        from .published_protocol import score_published  # torch: not loaded for our protocol's CPU-only runs

        return score_published(logits, gt_masks)
    if protocol != "ours":
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return score_ours(logits, gt_masks)
