"""``grounding-sam3``: Grounding-DINO boxes for a text prompt, each box prompted into SAM3 (published baseline row).

The detector runs through ``transformers``' zero-shot object detection classes; boxes are ranked by score. In the
oracle regime (``top-k-boxes``) the K best boxes become the K regions; in the autonomous regime
(``detector-boxes``) every box above the detection threshold does, at most 6. Each box gives SAM3's best mask for
that box, binarised and scored with the mask-only rule; no box means no region (every pixel unassigned).

SAM3's box prompts go through ``Sam3Processor``, which needs torchvision; that is checked when the method loads.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from PIL import Image

from ...errors import ModelAccessError
from ..metrics import mask_logits, pad_logits
from ..regimes import SampleRegime
from .base import Method, MethodOutput, torch_device
from .sam3 import DEFAULT_MODEL as DEFAULT_SAM3
from .sam3 import DEFAULT_PROMPT

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-base"
BOX_THRESHOLD = 0.25
TEXT_THRESHOLD = 0.25
MAX_REGIONS = 6


def require_torchvision(method: str) -> None:
    """SAM3's box prompts and instance post-processing import torchvision; fail early with the fix."""
    if importlib.util.find_spec("torchvision") is None:
        raise ModelAccessError(
            f"method {method!r} needs torchvision for SAM3 box prompts; install the build matching torch "
            "(e.g. torchvision==0.28.0 for torch 2.13)"
        )


def select_boxes(boxes: np.ndarray, scores: np.ndarray, mode: str, k: int | None) -> np.ndarray:
    """Boxes (N, 4) ranked by score: the K best (``top-k-boxes``) or all, at most 6 (``detector-boxes``)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = k if mode == "top-k-boxes" else MAX_REGIONS
    return np.asarray(boxes).reshape(-1, 4)[order][:keep]


class GroundingSam3Method(Method):
    """Grounding-DINO (``--model grounding-dino=ID``) → SAM3 box prompts (``--model sam3=ID``)."""

    kind = "grounding-sam3"

    def check(self) -> None:
        require_torchvision(self.name)

    def load(self) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, Sam3Model, Sam3Processor

        from ...backbones.loading import load_from_hub

        device = torch_device(self.options)
        detector_id = self.model_id("grounding-dino", DEFAULT_DETECTOR)
        sam3_id = self.model_id("sam3", DEFAULT_SAM3)
        self.loaded["device"] = device
        self.loaded["det_processor"] = load_from_hub("Grounding-DINO processor", detector_id,
                                                     lambda: AutoProcessor.from_pretrained(detector_id))
        self.loaded["detector"] = load_from_hub(
            "Grounding-DINO model", detector_id,
            lambda: AutoModelForZeroShotObjectDetection.from_pretrained(detector_id).to(device).eval())
        self.loaded["sam_processor"] = load_from_hub("SAM3 processor", sam3_id,
                                                     lambda: Sam3Processor.from_pretrained(sam3_id))
        self.loaded["sam3"] = load_from_hub("SAM3 model", sam3_id,
                                            lambda: Sam3Model.from_pretrained(sam3_id).to(device).eval())

    @torch.no_grad()
    def detect(self, image: Image.Image, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        processor, detector = self.loaded["det_processor"], self.loaded["detector"]
        text = prompt if prompt.endswith(".") else prompt + "."
        inputs = processor(images=image, text=text, return_tensors="pt").to(self.loaded["device"])
        outputs = detector(**inputs)
        result = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=BOX_THRESHOLD, text_threshold=TEXT_THRESHOLD,
            target_sizes=[image.size[::-1]],
        )[0]
        return result["boxes"].cpu().numpy(), result["scores"].cpu().numpy()

    @torch.no_grad()
    def box_mask(self, image: Image.Image, box: np.ndarray) -> np.ndarray:
        """SAM3's best mask (H, W) bool for one box prompt (x0, y0, x1, y1 in pixels)."""
        processor, model = self.loaded["sam_processor"], self.loaded["sam3"]
        inputs = processor(images=image, input_boxes=[[box.tolist()]], input_boxes_labels=[[1]],
                           return_tensors="pt").to(self.loaded["device"])
        outputs = model(**inputs)
        result = processor.post_process_instance_segmentation(
            outputs, threshold=0.0, mask_threshold=0.5, target_sizes=[image.size[::-1]])[0]
        if len(result["masks"]) == 0:
            return np.zeros(image.size[::-1], dtype=bool)
        best = int(torch.as_tensor(result["scores"]).argmax())
        return result["masks"][best].cpu().numpy().astype(bool)

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        prompt = self.options.prompt or DEFAULT_PROMPT
        pil = Image.fromarray(image)
        boxes, scores = self.detect(pil, prompt)
        k = regime.k if regime.mode == "top-k-boxes" else None
        chosen = select_boxes(boxes, scores, regime.mode, k)
        masks = np.stack([self.box_mask(pil, b) for b in chosen]) if len(chosen) else np.zeros((0, *image.shape[:2]))
        logits = mask_logits(masks)
        if k is not None:
            logits = pad_logits(logits, k)
        return MethodOutput(logits, [prompt] * logits.shape[0])
