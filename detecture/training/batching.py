"""Turn augmented :class:`TrainItem` lists into model-ready :class:`Batch` es (main process, after the DataLoader).

Tokenisation and SAM3 preprocessing run here rather than in DataLoader workers because they belong to the backbone
objects, which should not be pickled into worker processes; workers do the expensive part (decoding, augmenting).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.qwen import QwenVL
from ..prompts import format_response, user_prompt
from .dataset import TrainItem
from .model import Batch, TrainModule


def resize_masks(masks: np.ndarray, size: int) -> torch.Tensor:
    """(K, H, W) bool → (K, size, size) bool with nearest-exact sampling (the image is squashed to a square too)."""
    t = torch.from_numpy(np.ascontiguousarray(masks)).float()[None]
    return F.interpolate(t, size=(size, size), mode="nearest-exact")[0] > 0.5


def teacher_forced_inputs(qwen: QwenVL, items: list[TrainItem], images: list[np.ndarray]):
    """Qwen inputs with the assistant target ``TEXTURE_k: <description> <|seg|>`` lines and a closing ``<|im_end|>``,
    in the conversation of the contract the head trains under (``qwen.prompts``), one of ``images`` per item."""
    return qwen.build_inputs(
        images,
        [user_prompt(it.regime, qwen.prompts) for it in items],
        [format_response(it.descriptions) for it in items],
        end_response=True,
        system=qwen.prompts.system,
    )


def make_batch(items: list[TrainItem], module: TrainModule) -> Batch:
    """The batch ``module`` trains on, its images fed to both models as the head's contract has them fed at
    inference (:meth:`~detecture.bridge.contract.InferenceContract.model_images`)."""
    sam3 = module.sam3
    images = module.contract.model_images([it.image for it in items], sam3.image_size)
    return Batch(
        ids=[it.id for it in items],
        masks=[resize_masks(it.masks, sam3.image_size) for it in items],
        counts=[len(it.descriptions) for it in items],
        qwen_inputs=teacher_forced_inputs(module.qwen, items, images),
        pixel_values=sam3.preprocess(images),
    )
