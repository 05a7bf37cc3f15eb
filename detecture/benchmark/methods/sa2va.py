"""``sa2va``: Sa2VA (a VLM that emits ``[SEG]`` tokens decoded by SAM-2), loaded with its own hub code.

Sa2VA ships its model class as remote code, so loading it executes code from the hub: that only happens when the
user passes ``--trust-remote-code``. It is asked, like Detecture, for "exactly N" (oracle) or "between 1 and 6"
(autonomous) texture regions; every returned mask (at most K, or 6) becomes a region.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ...errors import InputError
from ..metrics import mask_logits, pad_logits
from ..regimes import SampleRegime
from .base import Method, MethodOutput, torch_device

DEFAULT_MODEL = "ByteDance/Sa2VA-4B"
MAX_REGIONS = 6


def sa2va_prompt(k: int | None) -> str:
    count = f"exactly {k} distinct texture region{'s' if k != 1 else ''}" if k else \
        f"between 1 and {MAX_REGIONS} distinct texture regions"
    return (f"<image>This image contains {count}. Segment each texture region, naming its material, "
            "one segmentation per region.")


class Sa2VAMethod(Method):
    kind = "sa2va"

    def settings(self) -> dict[str, Any]:
        return {"sa2va": self.model_id("sa2va", DEFAULT_MODEL)}

    def models(self) -> dict[str, str]:
        return {"Sa2VA model": self.model_id("sa2va", DEFAULT_MODEL)}

    def check(self) -> None:
        if not self.options.trust_remote_code:
            raise InputError("method 'sa2va' runs the model's own code from the hub; pass --trust-remote-code "
                             "to allow it")

    def load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from ...backbones.loading import load_from_hub

        model_id = self.model_id("sa2va", DEFAULT_MODEL)
        device = torch_device(self.options)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        remote = self.options.trust_remote_code  # always true here: check() refuses to run without it
        self.loaded["model"] = load_from_hub(
            "Sa2VA model", model_id,
            lambda: AutoModel.from_pretrained(model_id, dtype=dtype, trust_remote_code=remote).to(device).eval())
        self.loaded["tokenizer"] = load_from_hub(
            "Sa2VA tokenizer", model_id, lambda: AutoTokenizer.from_pretrained(model_id, trust_remote_code=remote))

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        k = regime.exact_k
        result = self.loaded["model"].predict_forward(
            image=Image.fromarray(image), text=sa2va_prompt(k), tokenizer=self.loaded["tokenizer"])
        masks = [np.asarray(m)[0] if np.asarray(m).ndim == 3 else np.asarray(m)
                 for m in result.get("prediction_masks") or []]
        masks = masks[: k or MAX_REGIONS]
        logits = mask_logits(np.stack(masks)) if masks else np.zeros((0, *image.shape[:2]), np.float32)
        if k is not None:
            logits = pad_logits(logits, k)
        text = str(result.get("prediction", ""))
        return MethodOutput(logits, [line.strip() for line in text.splitlines() if line.strip()][: logits.shape[0]])
