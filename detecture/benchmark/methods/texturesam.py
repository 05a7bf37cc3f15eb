"""``texturesam``: TextureSAM — SAM-2 fine-tuned on Textured-ADE20K — with SAM-2's automatic mask generator.

Loads a ``Sam2Model`` checkpoint (``--model texturesam=PATH``, a TextureSAM checkpoint in transformers format; there
is no default) and runs :class:`Sam2MaskGenerator`, SAM-2's automatic mask generation (AMG) in plain torch, with
TextureSAM's own settings (``sam2/inference.py`` of Scientific-Computing-Lab/TextureSAM): 64 points per side, predicted
IoU > 0.8, stability score > 0.2, one mask per point, box NMS at 0.7. SAM-2's defaults (32 / 0.95) return no masks on
texture images. Masks are ranked by area: the K largest in the oracle regime (``largest-k``), up to 6 when
autonomous (``all-masks``). Where kept masks overlap, the larger one wins (channel order = area order, ties go to the
earlier channel).

Why not ``transformers``' ``mask-generation`` pipeline: ``Sam2ImageProcessor`` imports torchvision at module level
(for ``batched_nms``), and torchvision cannot be installed beside every torch build. The generator below does the
same steps (single crop, ``crops_n_layers`` 0) with a small box NMS, and places the point grid as SAM-2's own AMG does
(normalised by the image's width and height), where the pipeline scales both axes by the longest side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import InputError
from ..metrics import mask_logits, pad_logits
from ..regimes import SampleRegime
from .base import Method, MethodOutput, torch_device

POINTS_PER_SIDE = 64
STABILITY_SCORE_THRESH = 0.2
PRED_IOU_THRESH = 0.8
MULTIMASK_OUTPUT = False
POINTS_PER_BATCH = 64
MAX_REGIONS = 6
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # Sam2ImageProcessor's normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)


def largest_masks(masks: list[np.ndarray], k: int) -> np.ndarray:
    """The ``k`` largest masks by area, largest first, as a (k', H, W) bool stack (k' ≤ k)."""
    if not masks:
        return np.zeros((0, 0, 0), dtype=bool)
    order = sorted(range(len(masks)), key=lambda i: -int(np.count_nonzero(masks[i])))
    return np.stack([np.asarray(masks[i], dtype=bool) for i in order[:k]])


def point_grid(n_per_side: int) -> torch.Tensor:
    """(n², 2) points (x, y) evenly spaced in [0, 1]², cell centres, row-major — SAM-2's AMG grid."""
    offset = 1 / (2 * n_per_side)
    side = torch.linspace(offset, 1 - offset, n_per_side)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks cut at ``threshold + offset`` and ``threshold − offset`` (the first lies inside the
    second), per mask (N, H, W) → (N,): how little the mask moves when the cut moves."""
    inner = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int64)
    outer = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int64)
    return inner.float() / outer.clamp(min=1).float()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool → (N, 4) inclusive pixel boxes (x0, y0, x1, y1); an empty mask gives (0, 0, 0, 0)."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    ys = torch.arange(masks.shape[1], device=masks.device)
    xs = torch.arange(masks.shape[2], device=masks.device)
    big_y, big_x = masks.shape[1], masks.shape[2]
    y0 = torch.where(rows, ys, big_y).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values
    x0 = torch.where(cols, xs, big_x).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(rows.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as ``torchvision.ops.nms``: indices of kept boxes, highest score first.

    The pairwise IoU matrix is computed once (vectorised); the greedy pass then only reads rows of it. Box area is
    (x1 − x0)·(y1 − y0), torchvision's convention, so a 0-area pair (IoU 0/0) never suppresses.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order].float()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    overlaps = (inter / (area[:, None] + area[None, :] - inter) > iou_threshold).cpu().numpy()
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not removed[i]:
            keep.append(i)
            removed |= overlaps[i]
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


class Sam2MaskGenerator:
    """SAM-2 automatic mask generation over one ``Sam2Model`` without torchvision.

    Called like ``transformers``' ``mask-generation`` pipeline (same keyword names and defaults, single crop) and
    returns the same ``{"masks": [(H, W) bool], "scores": (N,)}``, so the method can drive either. Steps, as SAM-2's
    AMG: embed the image once; prompt each grid point alone; upsample the mask logits to the image; keep masks with
    predicted IoU > ``pred_iou_thresh`` and stability score > ``stability_score_thresh``; binarise; box NMS.
    """

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_size(self) -> int:
        """Side of the square model input (1024 for released SAM-2); point prompts live in this frame."""
        return int(self.model.prompt_encoder.input_image_size)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """As ``Sam2ImageProcessor``: resize to the square input (bilinear, antialiased), /255, ImageNet normalise."""
        size = self.input_size
        pixels = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        pixels = (pixels.clamp(0, 255) / 255.0 - mean) / std
        dtype = next(self.model.parameters()).dtype
        return pixels.to(self.device, dtype)

    @torch.no_grad()
    def __call__(self, image: Image.Image, points_per_crop: int = 32, stability_score_thresh: float = 0.95,
                 pred_iou_thresh: float = 0.88, points_per_batch: int = 64, mask_threshold: float = 0.0,
                 stability_score_offset: float = 1.0, crops_nms_thresh: float = 0.7,
                 multimask_output: bool = True) -> dict[str, Any]:
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        embeddings = self.model.get_image_embeddings(self.preprocess(rgb))
        points = point_grid(points_per_crop).to(self.device) * self.input_size
        masks, scores = [], []
        for start in range(0, len(points), points_per_batch):
            batch = points[start:start + points_per_batch]
            out = self.model(image_embeddings=embeddings, input_points=batch[None, :, None, :],
                             input_labels=torch.ones(1, len(batch), 1, dtype=torch.long, device=self.device),
                             multimask_output=multimask_output)
            logits = F.interpolate(out.pred_masks[0].float(), size=(height, width), mode="bilinear",
                                   align_corners=False).flatten(0, 1)
            iou = out.iou_scores[0].float().flatten()
            keep = iou > pred_iou_thresh
            keep &= stability_scores(logits, mask_threshold, stability_score_offset) > stability_score_thresh
            masks.append((logits[keep] > mask_threshold).cpu())
            scores.append(iou[keep].cpu())
        all_masks, all_scores = torch.cat(masks), torch.cat(scores)
        kept = box_nms(masks_to_boxes(all_masks), all_scores, crops_nms_thresh)
        return {"masks": [m.numpy() for m in all_masks[kept]], "scores": all_scores[kept]}


class TextureSamMethod(Method):
    """TextureSAM through :class:`Sam2MaskGenerator`; :attr:`loaded` holds ``generator``."""

    kind = "texturesam"

    def settings(self) -> dict[str, Any]:
        return {"texturesam": self.options.models.get("texturesam")}

    def check(self) -> None:
        if not self.options.models.get("texturesam"):
            raise InputError("method 'texturesam' needs its checkpoint: --model texturesam=PATH_OR_ID "
                             "(TextureSAM weights converted to transformers' Sam2Model format)")

    def models(self) -> dict[str, str]:
        return {"TextureSAM (SAM-2) model": self.options.models["texturesam"]}  # check() requires it

    def load(self) -> None:
        from transformers import Sam2Model

        from ...backbones.loading import load_from_hub

        checkpoint = self.options.models["texturesam"]
        device = torch_device(self.options)
        model = load_from_hub("TextureSAM (SAM-2) model", checkpoint,
                              lambda: Sam2Model.from_pretrained(checkpoint).to(device))
        self.loaded["generator"] = Sam2MaskGenerator(model)

    def segment(self, image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        out = self.loaded["generator"](
            Image.fromarray(image), points_per_crop=POINTS_PER_SIDE, stability_score_thresh=STABILITY_SCORE_THRESH,
            pred_iou_thresh=PRED_IOU_THRESH, multimask_output=MULTIMASK_OUTPUT, points_per_batch=POINTS_PER_BATCH,
        )
        masks = [np.asarray(m, dtype=bool) for m in out["masks"]]
        k = self.requested_k(regime) if regime.mode == "largest-k" else MAX_REGIONS
        chosen = largest_masks(masks, k)
        logits = mask_logits(chosen) if len(chosen) else np.zeros((0, *image.shape[:2]), np.float32)
        if regime.mode == "largest-k":
            logits = pad_logits(logits, k)
        return MethodOutput(logits, [f"mask {i + 1}" for i in range(logits.shape[0])])
