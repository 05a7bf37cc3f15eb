"""``sam3``: SAM3 alone, prompted with one text phrase (the published SAM3 baseline row).

SAM3 returns up to 200 instance masks with confidence scores (query score × presence score). How they become K
regions is the dispatch mode: ``single-prompt`` keeps the best instance for K = 1, applies the inverse-mask trick for
K = 2 (best mask m → ``[m, −m]``: the prompt's region versus everything else, an exact two-way split) and keeps the K
best instances beyond that; ``top-k-gt`` (autonomous regime) keeps the K_gt best instances — the one concession the
protocol gives a method that cannot count. Masks are binarised at logit 0 and scored with the mask-only rule.

Text prompting needs no torchvision: images are preprocessed as ``Sam3ImageProcessor`` does (see
:meth:`detecture.backbones.sam3.Sam3Backbone.preprocess`) and phrases tokenised with SAM3's CLIP tokenizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...backbones import DEFAULT_SAM3
from ..metrics import inverse_mask_logits, mask_logits, pad_logits
from ..regimes import SampleRegime
from .base import Method, MethodOutput

DEFAULT_MODEL = DEFAULT_SAM3
DEFAULT_PROMPT = "texture"


def instances_to_logits(masks: np.ndarray, scores: np.ndarray, k: int, mode: str) -> np.ndarray:
    """(Q, H, W) instance mask logits + (Q,) scores → (K, H, W) region logits for the dispatch mode.

    Kept instances are ordered by score; fewer instances than K leaves the missing channels at −1e4.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    binary = np.asarray(masks)[order] > 0
    if mode == "single-prompt" and k == 2:
        best = mask_logits(binary[:1])[0] if len(binary) else np.full(masks.shape[1:], -5.0, np.float32)
        return inverse_mask_logits(best)
    return pad_logits(mask_logits(binary[:k]), k)


class Sam3Method(Method):
    """SAM3 with a text prompt (``--prompt``, default "texture"); weights from ``--sam3 ID``."""

    kind = "sam3"

    def settings(self) -> dict[str, Any]:
        settings = {"sam3": self.model_id("sam3", DEFAULT_MODEL), "prompt": self.options.prompt or DEFAULT_PROMPT,
                    "tiny": self.options.tiny}
        if self.options.tiny:  # the seed draws tiny random weights; cells scored with real ones keep their record
            settings["seed"] = self.options.seed
        return settings

    def models(self) -> dict[str, str]:
        return {} if self.options.tiny else {"SAM3 model": self.model_id("sam3", DEFAULT_MODEL)}

    def load(self) -> None:
        from ...backbones.sam3 import Sam3Backbone
        from .base import torch_device

        if self.options.tiny:
            self.loaded["sam3"] = Sam3Backbone.tiny(self.options.seed)
        else:
            self.loaded["sam3"] = Sam3Backbone.from_pretrained(
                self.model_id("sam3", DEFAULT_MODEL), device=torch_device(self.options)
            )

    @torch.no_grad()
    def instances(self, image: np.ndarray, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """All instance mask logits (Q, H, W) at image resolution and their scores (Q,)."""
        backbone = self.loaded["sam3"]
        pixels = backbone.preprocess([image])
        tokens = backbone.tokenizer([prompt], padding="max_length", truncation=True, max_length=32,
                                    return_tensors="pt").to(backbone.device)
        out = backbone.model(pixel_values=pixels, input_ids=tokens["input_ids"],
                             attention_mask=tokens["attention_mask"])
        scores = out.pred_logits[0].float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits[0].float().sigmoid()
        masks = F.interpolate(out.pred_masks.float(), size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        return masks.cpu().numpy(), scores.cpu().numpy()

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        prompt = self.options.prompt or DEFAULT_PROMPT
        masks, scores = self.instances(image, prompt)
        logits = instances_to_logits(masks, scores, self.requested_k(regime), regime.mode)
        return MethodOutput(logits, [prompt] * logits.shape[0])
