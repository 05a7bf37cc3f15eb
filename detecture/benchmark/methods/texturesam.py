"""``texturesam``: TextureSAM — SAM-2 fine-tuned on Textured-ADE20K — with SAM-2's automatic mask generator.

Runs ``transformers``' ``mask-generation`` pipeline over a ``Sam2Model`` checkpoint (``--model texturesam=PATH``, a
TextureSAM checkpoint in transformers format; there is no default). The generator needs ``points_per_side`` 64 and
``stability_score_thresh`` 0.2: SAM-2's defaults (32 / 0.95) return no masks on texture images. Masks are ranked by
area: the K largest in the oracle regime (``largest-k``), up to 6 when autonomous (``all-masks``). Where kept masks
overlap, the larger one wins (channel order = area order, ties go to the earlier channel).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...errors import InputError
from ..metrics import mask_logits, pad_logits
from ..regimes import SampleRegime
from .base import Method, MethodOutput, torch_device
from .grounding_sam3 import require_torchvision

POINTS_PER_SIDE = 64
STABILITY_SCORE_THRESH = 0.2
POINTS_PER_BATCH = 64
MAX_REGIONS = 6


def largest_masks(masks: list[np.ndarray], k: int) -> np.ndarray:
    """The ``k`` largest masks by area, largest first, as a (k', H, W) bool stack (k' ≤ k)."""
    if not masks:
        return np.zeros((0, 0, 0), dtype=bool)
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i])))
    return np.stack([np.asarray(masks[i], dtype=bool) for i in order[:k]])


class TextureSamMethod(Method):
    kind = "texturesam"

    def check(self) -> None:
        if not self.options.models.get("texturesam"):
            raise InputError("method 'texturesam' needs its checkpoint: --model texturesam=PATH_OR_ID "
                             "(TextureSAM weights converted to transformers' Sam2Model format)")
        require_torchvision(self.name)  # the generator's mask NMS uses torchvision

    def load(self) -> None:
        from transformers import Sam2Model, pipeline

        from ...backbones.loading import load_from_hub

        checkpoint = self.options.models["texturesam"]
        device = torch_device(self.options)
        model = load_from_hub("TextureSAM (SAM-2) model", checkpoint, lambda: Sam2Model.from_pretrained(checkpoint))
        self.loaded["generator"] = load_from_hub(
            "TextureSAM image processor", checkpoint,
            lambda: pipeline("mask-generation", model=model, image_processor=checkpoint, device=device))

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        out = self.loaded["generator"](
            Image.fromarray(image), points_per_crop=POINTS_PER_SIDE, stability_score_thresh=STABILITY_SCORE_THRESH,
            points_per_batch=POINTS_PER_BATCH,
        )
        masks = [np.asarray(m, dtype=bool) for m in out["masks"]]
        k = regime.k if regime.mode == "largest-k" else MAX_REGIONS
        chosen = largest_masks(masks, k)
        logits = mask_logits(chosen) if len(chosen) else np.zeros((0, *image.shape[:2]), np.float32)
        if regime.mode == "largest-k":
            logits = pad_logits(logits, k)
        return MethodOutput(logits, [f"mask {i + 1}" for i in range(logits.shape[0])])
