"""The image operations every stage shares: logits to labels, label boundaries, fitting to a side, region colours.

One home so that the scorer, the overlays, the miner's review sheets and the demo draw and count the same thing:
a boundary the metric scores is the boundary the overlay draws. Pure numpy, so importing it costs nothing in worker
processes.
"""

from __future__ import annotations

import numpy as np


def partition(logits: np.ndarray) -> np.ndarray:
    """Static-dustbin argmax: (K, H, W) logits → (H, W) uint8 labels, 0 = unassigned, k = channel k − 1.

    A running tournament starting from the dustbin (logit 0): channel k takes a pixel only where its logit is
    *strictly* greater than the best so far, so the dustbin wins ties at 0 and earlier channels win ties between
    channels. Labels are updated with uint8 arithmetic instead of masked assignment, which vectorises; this is 1.5-3×
    faster than ``np.argmax`` over axis 0 and independent of how noisy the logits are.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3 or logits.shape[0] > 254:
        raise ValueError(f"logits must be (K, H, W) with K < 255, got shape {logits.shape}")
    shape = logits.shape[1:]
    best = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    won = np.empty(shape, dtype=bool)
    scratch = np.empty(shape, dtype=np.uint8)
    won_u8 = won.view(np.uint8)
    for k in range(logits.shape[0]):
        np.greater(logits[k], best, out=won)
        np.maximum(best, logits[k], out=best, casting="unsafe")
        # labels += won · (k + 1 − labels), in wrapping uint8 arithmetic: k + 1 where won, unchanged elsewhere
        np.subtract(np.uint8(k + 1), labels, out=scratch)
        np.multiply(scratch, won_u8, out=scratch)
        np.add(labels, scratch, out=labels)
    return labels


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour carries a different label (a 1-px outline of every region)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge
