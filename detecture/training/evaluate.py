"""Validation during training, scored by the shared benchmark metrics (``detecture.benchmark.metrics``).

Two checks, because teacher-forced scores can look fine while the model never emits ``<|seg|>`` (published: live
mIoU exactly 0 in that state):

* :func:`teacher_forced_scores` — cheap, every few steps: mIoU of the head on GT responses;
* :func:`live_evaluate` — every N epochs: greedy generation through :class:`DetecturePipeline`, reporting the SEG
  emission rate, K accuracy, mIoU, panoptic IoU and ARI. A sample whose data fails (a ``DetectureError``) is counted
  as a failure, never dropped; an environment fault (out of memory, a CUDA or NCCL error) is no sample's failure and
  stops the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..benchmark.scoring import score_logits
from ..pipeline import DetecturePipeline
from ..prompts import Regime, RegimeKind
from ..utils.parallel import item_outcome
from .dataset import TextureDataset
from .model import Batch, TrainModule

log = logging.getLogger(__name__)


@dataclass
class LiveScores:
    n: int
    failures: int
    seg_emission: float
    k_accuracy: float
    miou: float
    panoptic_iou: float
    ari: float

    def as_dict(self) -> dict[str, float]:
        return dict(vars(self))


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@torch.no_grad()
def teacher_forced_scores(module: TrainModule, batch: Batch) -> list[float]:
    """Matched-pair mIoU per sample of the head's partition given the GT response (head in eval mode)."""
    states = module.seg_states_frozen(batch.qwen_inputs, batch.counts)
    vision = module.sam3.vision_features(batch.pixel_values)
    logits, _ = module.slot_logits(states, vision)
    size = tuple(batch.masks[0].shape[-2:])
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    scores = []
    for b, k in enumerate(batch.counts):
        region = (logits[b, 1 : k + 1] - logits[b, :1]).cpu().numpy()  # relative to the learned dustbin
        score, _ = score_logits(region, batch.masks[b].cpu().numpy())
        scores.append(score.miou)
    return scores


def regime_for(kind: str, k: int) -> Regime:
    return Regime.oracle(k) if kind == RegimeKind.ORACLE else Regime.autonomous()


@torch.no_grad()
def live_evaluate(
    pipeline: DetecturePipeline, dataset: TextureDataset, indices: list[int], regime: str = "autonomous"
) -> LiveScores:
    """Generate, ground and score each sample; the dataset's un-augmented view (``train=False``) is used."""
    emitted, k_ok, miou, pan, ari = [], [], [], [], []
    failures = 0
    for index in indices:
        item = dataset.item(index, epoch=0)
        results, error = item_outcome(pipeline.segment, [item.image], regime_for(regime, len(item.descriptions)))
        if error is not None:
            log.warning("live evaluation failed on %s: %s", item.id, error)
            failures += 1
            continue
        result = results[0]
        emitted.append(float(result.num_regions > 0))
        score, _ = score_logits(result.logits, item.masks)
        k_ok.append(float(result.num_regions == len(item.descriptions)))  # K as emitted, not as surviving argmax
        miou.append(score.miou)
        pan.append(score.panoptic_iou)
        ari.append(score.ari)
    return LiveScores(
        n=len(indices), failures=failures, seg_emission=_mean(emitted), k_accuracy=_mean(k_ok), miou=_mean(miou),
        panoptic_iou=_mean(pan), ari=_mean(ari),
    )
