"""``grounding-sam3``: Grounding-DINO boxes for a text prompt, each box prompted into SAM3 (published baseline row).

The detector runs through ``transformers``' zero-shot object detection classes; boxes are ranked by score. In the
oracle regime (``top-k-boxes``) the K best boxes become the K regions; in the autonomous regime
(``detector-boxes``) every box above the detection threshold does, at most 6. Each box gives SAM3's best mask for
that box, binarised and scored with the mask-only rule; no box means no region (every pixel unassigned).

No torchvision is needed (it cannot be installed beside every torch build):

- Grounding-DINO: ``AutoProcessor`` falls back to ``GroundingDinoImageProcessorPil`` when torchvision is missing, and
  the model and ``post_process_grounded_object_detection`` are plain torch.
- SAM3: ``Sam3Processor`` is skipped. Images are preprocessed as ``Sam3ImageProcessor`` does
  (:meth:`detecture.backbones.sam3.Sam3Backbone.preprocess`), boxes are normalised to (cx, cy, w, h) in [0, 1] as
  ``Sam3Processor`` does, and the text beside a box-only prompt is ``"visual"``, ``Sam3Processor``'s default.
- SAM3's geometry encoder pools box features with ``torchvision.ops.roi_align``; when torchvision is absent,
  :func:`roi_align` (the same algorithm in plain torch) stands in for it during the call.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..metrics import mask_logits, pad_logits
from ..regimes import SampleRegime
from .base import Method, MethodOutput, torch_device
from .sam3 import DEFAULT_MODEL as DEFAULT_SAM3
from .sam3 import DEFAULT_PROMPT

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-base"
BOX_THRESHOLD = 0.25
TEXT_THRESHOLD = 0.25
MAX_REGIONS = 6
BOX_PROMPT_TEXT = "visual"  # Sam3Processor's text for a prompt made of boxes only
TEXT_PROMPT_LENGTH = 32  # Sam3Processor pads text to 32 tokens
MASK_THRESHOLD = 0.5  # on mask probabilities, Sam3Processor's instance post-processing default


def select_boxes(boxes: np.ndarray, scores: np.ndarray, mode: str, k: int | None) -> np.ndarray:
    """Boxes (N, 4) ranked by score: the K best (``top-k-boxes``) or all, at most 6 (``detector-boxes``)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = k if mode == "top-k-boxes" else MAX_REGIONS
    return np.asarray(boxes).reshape(-1, 4)[order][:keep]


def normalized_cxcywh(boxes: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Pixel (x0, y0, x1, y1) boxes (N, 4) → SAM3's box prompt format, (cx, cy, w, h) in [0, 1] of the image.

    Same arithmetic as ``Sam3Processor`` (divide by the original size, then corners → centre/size; no clipping).
    """
    xyxy = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    xyxy = xyxy / torch.tensor([width, height, width, height], dtype=torch.float32)
    x0, y0, x1, y1 = xyxy.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def _bilinear_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """(S,) sample coordinates → (S, size) linear-interpolation weights with torchvision's ``roi_align`` borders.

    Pixel i sits at coordinate i; a sample outside [-1, size] contributes 0, one in [-1, 0) or (size - 1, size]
    takes the edge pixel's value.
    """
    inside = (coords >= -1.0) & (coords <= size)
    c = coords.clamp(0, size - 1)
    low = c.floor().long()
    high = (low + 1).clamp(max=size - 1)
    frac = c - low.to(c.dtype)
    weights = torch.zeros(coords.shape[0], size, dtype=coords.dtype, device=coords.device)
    rows = torch.arange(coords.shape[0], device=coords.device)
    weights.index_put_((rows, low), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights * inside[:, None].to(coords.dtype)


def _sample_coords(start: torch.Tensor, extent: torch.Tensor, bins: int) -> tuple[torch.Tensor, int]:
    """Sample coordinates along one axis of a box: ``bins`` bins of ``grid`` evenly spaced samples each."""
    grid = max(math.ceil(float(extent) / bins), 1)  # sampling_ratio=-1: adaptive, ceil(extent / bins)
    step = extent / bins
    idx = torch.arange(bins * grid, dtype=start.dtype, device=start.device)
    coords = start + (idx // grid) * step + ((idx % grid) + 0.5) * step / grid
    return coords, grid


def roi_align(features: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int) -> torch.Tensor:
    """Plain-torch ``torchvision.ops.roi_align(features, boxes, output_size)`` (spatial_scale 1, sampling_ratio -1,
    aligned False — the call SAM3's geometry encoder makes).

    Bilinear sampling is separable, so each box is two small interpolation matrices and one einsum, then an average
    over each bin's samples. Loops over boxes only (a handful per image here).
    """
    pooled = []
    height, width = features.shape[-2:]
    for image_index, image_boxes in enumerate(boxes):
        feature = features[image_index].float()
        for box in image_boxes.float():
            x0, y0, x1, y1 = box.unbind()
            box_w, box_h = (x1 - x0).clamp(min=1.0), (y1 - y0).clamp(min=1.0)
            ys, grid_h = _sample_coords(y0, box_h, output_size)
            xs, grid_w = _sample_coords(x0, box_w, output_size)
            samples = torch.einsum("yh,chw,xw->cyx", _bilinear_weights(ys, height), feature,
                                   _bilinear_weights(xs, width))
            bins = samples.reshape(-1, output_size, grid_h, output_size, grid_w).mean(dim=(2, 4))
            pooled.append(bins.to(features.dtype))
    if not pooled:
        return features.new_zeros(0, features.shape[1], output_size, output_size)
    return torch.stack(pooled)


@contextmanager
def roi_align_without_torchvision() -> Iterator[None]:
    """Let SAM3's box prompts run without torchvision: while active, the ``torchvision`` name SAM3's modeling module
    uses (only for ``ops.roi_align``) resolves to :func:`roi_align`. A no-op when torchvision is installed."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    # imported by path: attribute access on transformers' lazy ``models.sam3`` package refuses without torchvision
    modeling_sam3 = importlib.import_module("transformers.models.sam3.modeling_sam3")
    missing = object()
    previous = getattr(modeling_sam3, "torchvision", missing)
    modeling_sam3.torchvision = SimpleNamespace(ops=SimpleNamespace(roi_align=roi_align))
    try:
        yield
    finally:
        if previous is missing:
            del modeling_sam3.torchvision
        else:
            modeling_sam3.torchvision = previous


class GroundingSam3Method(Method):
    """Grounding-DINO (``--model grounding-dino=ID``) → SAM3 box prompts (``--sam3 ID``).

    :attr:`loaded` holds ``det_processor`` (a ``GroundingDinoProcessor``), ``detector`` (a zero-shot detection
    model), ``sam3`` (a :class:`~detecture.backbones.sam3.Sam3Backbone`) and ``device``.
    """

    kind = "grounding-sam3"

    def settings(self) -> dict[str, Any]:
        return {"grounding-dino": self.model_id("grounding-dino", DEFAULT_DETECTOR),
                "sam3": self.model_id("sam3", DEFAULT_SAM3), "prompt": self.options.prompt or DEFAULT_PROMPT}

    def models(self) -> dict[str, str]:
        return {"Grounding-DINO model": self.model_id("grounding-dino", DEFAULT_DETECTOR),
                "SAM3 model": self.model_id("sam3", DEFAULT_SAM3)}

    def load(self) -> None:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from ...backbones.loading import load_from_hub
        from ...backbones.sam3 import Sam3Backbone

        device = torch_device(self.options)
        detector_id = self.model_id("grounding-dino", DEFAULT_DETECTOR)
        self.loaded["device"] = device
        self.loaded["det_processor"] = load_from_hub("Grounding-DINO processor", detector_id,
                                                     lambda: AutoProcessor.from_pretrained(detector_id))
        self.loaded["detector"] = load_from_hub(
            "Grounding-DINO model", detector_id,
            lambda: AutoModelForZeroShotObjectDetection.from_pretrained(detector_id).to(device).eval())
        self.loaded["sam3"] = Sam3Backbone.from_pretrained(self.model_id("sam3", DEFAULT_SAM3), device=device)

    @torch.no_grad()
    def detect(self, image: Image.Image, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """Grounding-DINO boxes (N, 4) as pixel (x0, y0, x1, y1) and their scores (N,) above the box threshold."""
        processor, detector = self.loaded["det_processor"], self.loaded["detector"]
        text = prompt if prompt.endswith(".") else prompt + "."
        inputs = processor(images=image, text=text, return_tensors="pt").to(self.loaded["device"])
        outputs = detector(**inputs)
        result = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=BOX_THRESHOLD, text_threshold=TEXT_THRESHOLD,
            target_sizes=[image.size[::-1]],
        )[0]
        return result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy()

    @torch.no_grad()
    def box_masks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """SAM3's best mask (H, W) bool for each box prompt (pixel x0, y0, x1, y1), as an (N, H, W) stack.

        One SAM3 batch of N single-box prompts; the vision features are computed once and expanded (no copy). The
        best instance is the highest query score × presence score, and its mask probability is resized and cut at
        0.5, as in ``Sam3Processor.post_process_instance_segmentation``.
        """
        backbone = self.loaded["sam3"]
        height, width = image.shape[:2]
        n = len(boxes)
        features = backbone.select_images(backbone.vision_features(backbone.preprocess([image])),
                                          torch.zeros(n, dtype=torch.long))
        tokens = backbone.tokenizer([BOX_PROMPT_TEXT] * n, padding="max_length", truncation=True,
                                    max_length=TEXT_PROMPT_LENGTH, return_tensors="pt").to(backbone.device)
        prompt_boxes = normalized_cxcywh(boxes, height, width)[:, None].to(backbone.device, backbone.dtype)
        with roi_align_without_torchvision():
            out = backbone.model(vision_embeds=features, input_ids=tokens["input_ids"],
                                 attention_mask=tokens["attention_mask"], input_boxes=prompt_boxes,
                                 input_boxes_labels=torch.ones(n, 1, dtype=torch.long, device=backbone.device))
        scores = out.pred_logits.float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits.float().sigmoid()
        best = out.pred_masks[torch.arange(n), scores.argmax(dim=1)].float().sigmoid()
        masks = F.interpolate(best[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        return (masks > MASK_THRESHOLD).cpu().numpy()

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        prompt = self.options.prompt or DEFAULT_PROMPT
        boxes, scores = self.detect(Image.fromarray(image), prompt)
        k = self.requested_k(regime) if regime.mode == "top-k-boxes" else None
        chosen = select_boxes(boxes, scores, regime.mode, k)
        masks = self.box_masks(image, chosen) if len(chosen) else np.zeros((0, *image.shape[:2]), dtype=bool)
        logits = mask_logits(masks)
        if k is not None:
            logits = pad_logits(logits, k)
        return MethodOutput(logits, [prompt] * logits.shape[0])
