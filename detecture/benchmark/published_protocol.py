"""The published evaluator's scoring (the paper's table), reproduced as a second protocol beside ours.

Read from the published test script and dataset (aviadcohz/Qwen2SAM_Detecture: scripts/test_on_dataset.py,
data/dataset.py, training/monitor.py), it differs from :mod:`detecture.benchmark.metrics` in five ways:

* everything is scored at 1008 x 1008: the ground-truth masks are resized with OpenCV's nearest rule
  (source index ``floor(dst * (1 / (dst_size / src)))``, see :func:`opencv_nearest`), whatever the image's aspect;
* only the first 6 ground-truth textures are kept, painted in order into one index map, so where masks overlap the
  **last** texture wins; every kept mask counts in K_gt, **empty ones included** (they can only be matched at IoU 0);
* the prediction is the argmax over ``[dustbin, texture_1..K, padding..]`` (7 channels) after bilinear upsampling
  (``align_corners=False``) of the model-resolution logits, with padding channels set to ``-inf`` *before* the
  upsampling. Where an interpolation weight is exactly 0 (the clamped image border), ``0 x -inf`` is NaN; argmax
  takes NaN as the maximum, so those border pixels get a padding label: **no region at all**, not even the dustbin.
  This is an artefact of the published code, kept because the published numbers include it;
* mIoU is the mean IoU over Hungarian pairs of (K_pred, K_gt) classes (cost 1 - IoU, union floored at 1 pixel),
  0 when nothing is matched; ARI is over every pixel of the two 1008² label maps (padding labels included).

Panoptic IoU (matched sum / max(K_pred, K_gt)) and boundary F are reported on the same maps for completeness; the
published evaluator has neither. Boundary F leaves the padding pixels out of both maps: read as a region (or as the
dustbin), the NaN border's inner edge would count as a predicted boundary and roughly halve the score of a perfect
prediction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .metrics import SampleScore, ari_from_table, boundary_f, contingency, emitted_channels

PUBLISHED_SIZE = 1008
PUBLISHED_MAX_TEXTURES = 6


def nearest_source_index(src: int, size: int = PUBLISHED_SIZE) -> np.ndarray:
    """OpenCV resizeNN's source index for each of ``size`` destination indices: ``min(floor(d * ifx), src - 1)``
    with ``ifx = 1 / (size / src)`` in double precision. The reciprocal is rounded on its own, so this is not
    ``floor(d * src / size)``: for 451 source sizes in 100..4099 (375 among them) some indices differ by one."""
    ifx = 1.0 / (size / src)
    return np.minimum(np.floor(np.arange(size) * ifx).astype(np.int64), src - 1)


def opencv_nearest(mask: np.ndarray, size: int = PUBLISHED_SIZE) -> np.ndarray:
    """``cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)``, as the published dataset.py resized GT."""
    h, w = mask.shape[:2]
    return mask[nearest_source_index(h, size)[:, None], nearest_source_index(w, size)[None, :]]


def published_k_gt(gt_masks: np.ndarray) -> int:
    """K_gt as the published evaluator counts it: every kept mask (the first 6), empty ones included."""
    return min(len(gt_masks), PUBLISHED_MAX_TEXTURES)


def published_gt(gt_masks: np.ndarray, size: int = PUBLISHED_SIZE) -> tuple[np.ndarray, int]:
    """(index map at size², K_gt): the first 6 masks painted in order (the last wins an overlap), empty ones
    counted."""
    masks = np.asarray(gt_masks, dtype=bool)[:PUBLISHED_MAX_TEXTURES]
    index = np.zeros((size, size), dtype=np.int64)
    for i, mask in enumerate(masks):
        index[opencv_nearest(mask, size)] = i + 1
    return index, published_k_gt(gt_masks)


def published_gt_notes(gt_masks: np.ndarray, gt: np.ndarray) -> dict[int, str]:
    """Why each GT mask that is no region of ``gt``, the published ground truth of ``gt_masks``
    (:func:`published_gt`), is so, by mask index (a template naming the mask as ``{mask}``): the user is told which
    masks the score drops, and which count in K_gt without a pixel."""
    masks = np.asarray(gt_masks, dtype=bool)
    painted = set(np.unique(gt).tolist())
    notes = {}
    for i, mask in enumerate(masks):
        if i >= PUBLISHED_MAX_TEXTURES:
            notes[i] = (f"mask {{mask}} is past the first {PUBLISHED_MAX_TEXTURES} textures, the only ones the "
                        f"published protocol keeps, so it is not scored")
        elif not mask.any():
            notes[i] = "empty mask {mask}, counted in K_gt all the same (the published protocol counts every kept mask)"
        elif i + 1 not in painted:
            notes[i] = ("mask {mask} has no pixel in the published protocol's 1008² ground truth (later masks cover "
                        "it, the last mask winning an overlap, or the resize drops it), yet counts in K_gt")
    return notes


def published_prediction(logits: np.ndarray, size: int = PUBLISHED_SIZE) -> tuple[np.ndarray, int]:
    """(label map at size², K_pred) from region logits relative to the dustbin (K, h, w) at model resolution.

    Label 0 is the dustbin, 1..K_pred a texture, above K_pred a padding channel (the NaN border)."""
    logits = np.asarray(logits, dtype=np.float32)
    k_pred = min(emitted_channels(logits), PUBLISHED_MAX_TEXTURES)
    h, w = logits.shape[1:]
    channels = torch.full((1 + PUBLISHED_MAX_TEXTURES, h, w), float("-inf"))
    channels[0] = 0.0  # the dustbin: region logits are already relative to it
    channels[1:k_pred + 1] = torch.from_numpy(logits[:k_pred])
    if (h, w) != (size, size):  # the published evaluator interpolates only when the sizes differ
        channels = F.interpolate(channels[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return np.argmax(channels.numpy(), axis=0).astype(np.int64), k_pred  # NaN is the maximum, as in torch.argmax


def published_matched_miou(pred: np.ndarray, gt: np.ndarray, k_pred: int, k_gt: int
                           ) -> tuple[float, list[tuple[int, int, float]]]:
    """Hungarian matching of classes 1..k_pred against 1..k_gt on a (max(k_pred,1), max(k_gt,1)) cost 1 - IoU;
    the mean IoU of the pairs inside both ranges (0.0 when there are none) and those pairs (gt, pred, IoU)."""
    table = contingency(gt, pred)
    table = np.pad(table, ((0, max(0, k_gt + 1 - table.shape[0])), (0, max(0, k_pred + 1 - table.shape[1]))))
    cost = np.ones((max(k_pred, 1), max(k_gt, 1)))
    for p in range(k_pred):
        for g in range(k_gt):
            inter = table[g + 1, p + 1]
            union = table[g + 1, :].sum() + table[:, p + 1].sum() - inter
            cost[p, g] = 1.0 - inter / max(union, 1)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(c) + 1, int(r) + 1, float(1.0 - cost[r, c])) for r, c in zip(rows, cols) if r < k_pred and c < k_gt]
    return (float(np.mean([p[2] for p in pairs])) if pairs else 0.0), pairs


def score_published(logits: np.ndarray, gt: np.ndarray, k_gt: int) -> tuple[SampleScore, np.ndarray]:
    """Score model-resolution region logits (K, h, w) the published way against ``gt``, the published ground truth
    of K_gt ``k_gt`` (:func:`published_gt`); returns the score and the 1008² label map (padding labels set to 0)."""
    pred, k_pred = published_prediction(logits)
    miou, pairs = published_matched_miou(pred, gt, k_pred, k_gt)
    denom = max(k_pred, k_gt)
    labels = np.where(pred > k_pred, 0, pred).astype(np.uint8)
    score = SampleScore(
        miou=miou,
        panoptic_iou=float(sum(p[2] for p in pairs) / denom) if denom else 1.0,
        ari=ari_from_table(contingency(gt, pred)),
        boundary_f=boundary_f(gt, labels, valid=pred <= k_pred),
        k_pred=k_pred,
        k_gt=k_gt,
        matches=tuple(pairs),
    )
    return score, labels
