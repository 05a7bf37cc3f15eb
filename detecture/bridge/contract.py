"""The inference contract: everything that must match between how a head was trained and how it is run.

A head's weights only mean something under the conversation, positions and image they were trained with: different
prompt wording, RoPE positions or image size give different ``<|seg|>`` states and silently worse masks. So the
contract travels inside the head's ``config.json`` (prompt texts in full, so a head is self-contained) and
:class:`detecture.pipeline.DetecturePipeline`, the benchmark, training's live evaluation and ``detecture segment``
all run a head under its own contract. A head saved before contracts existed gets :func:`legacy_contract`, which is
exactly the behaviour such heads were trained and evaluated with.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..images import keep_within_aspect, resize_linear
from ..prompt_sets import DEFAULT_PROMPT_SET, PUBLISHED_PROMPT_SET, PromptSet, prompt_set

POSITION_MODES = ("line_local", "global")
IMAGE_MODES = ("native", "square")
ORACLE_K_POLICIES = ("cap", "none")
FALLBACKS = ("none", "texture_lines")
IMAGE_RESIZES = ("separate", "shared_linear")
PRECISIONS = ("weights", "bf16_autocast")
# The side SAM3 sees images at; Qwen gets the same pixel count by default, so a 12-MP photo costs ~1k visual tokens
# instead of ~12k, and training, inference, mining and the benchmark all feed Qwen the same amount of detail.
DEFAULT_QWEN_PIXELS = 1008 * 1008
PUBLISHED_VOCABULARY = 151_670  # rows of the published model's embedding (<|seg|> is the last)


def _check_positive(value: Any, what: str, *, integer: bool = False, optional: bool = False) -> None:
    """The one rule for a contract's numeric terms: a real number (an integer where asked), finite and above zero, or
    None where the term allows it. A JSON string, ``true`` or a non-positive scale is refused here rather than failing
    as a TypeError at first use, or silently flipping masks."""
    if value is None and optional:
        return
    kinds = int if integer else (int, float)
    number = isinstance(value, kinds) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and not math.isfinite(value)) or not value > 0:
        expected = f"a positive {'integer' if integer else 'number'}" + (" or null" if optional else "")
        raise CheckpointError(f"contract {what} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class ImagePolicy:
    """The image Qwen sees: ``native`` aspect, downscaled to at most ``max_pixels`` (None: only the hub
    preprocessor's own limits), or ``square``: resized to ``size`` x ``size`` whatever the aspect (published)."""

    mode: str = "native"
    max_pixels: int | None = DEFAULT_QWEN_PIXELS
    size: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in IMAGE_MODES:
            raise CheckpointError(f"contract qwen_image.mode must be one of {', '.join(IMAGE_MODES)}, "
                                  f"got {self.mode!r}")
        _check_positive(self.max_pixels, "qwen_image.max_pixels", integer=True, optional=True)
        _check_positive(self.size, "qwen_image.size", integer=True, optional=self.mode != "square")

    def target_size(self, height: int, width: int) -> tuple[int, int] | None:
        """(height, width) to resize to, or None to keep the image as it is. An image within
        :data:`~detecture.images.MAX_ASPECT` stays within it, so what the up-front shape check accepts Qwen takes."""
        if self.mode == "square":
            return None if (height, width) == (self.size, self.size) else (self.size, self.size)
        if self.max_pixels is None or height * width <= self.max_pixels:
            return None
        scale = math.sqrt(self.max_pixels / (height * width))
        # truncating both sides can stretch a strip the up-front check accepted past what Qwen's image processor takes
        return keep_within_aspect((height, width), (max(1, int(height * scale)), max(1, int(width * scale))))


@dataclass(frozen=True)
class InferenceContract:
    """How a head must be run. ``logit_scale`` None means 1/sqrt(mask width) (Detecture's head); the published head
    has none (1.0). ``embedding_shrink`` multiplies every non-``<|seg|>`` row of the input embedding and LM head:
    the factor by which a training run's weight decay shrank them (1.0: untouched).

    Four terms reproduce the published inference exactly (:func:`published_contract`); their defaults are
    Detecture's own choices:

    * ``image_resize``: ``separate`` (ours: Qwen and SAM3 each resize the original image, SAM3 with antialiasing) or
      ``shared_linear`` (published: one OpenCV-INTER_LINEAR resize, no antialiasing, to a SAM3-sized square uint8
      image that feeds both models);
    * ``vocab_limit``: generation may only pick ids below it (published: 151,670, the rows its model had); None: all;
    * ``precision``: ``weights`` (run in the loaded dtypes) or ``bf16_autocast`` (published: fp32 SAM3 and head
      weights under bfloat16 autocast);
    * ``sam3_vit_eps``: the epsilon of SAM3's ViT LayerNorms; the published head was trained on Meta's ``sam3``
      (1e-5), ``transformers``' default is 1e-6; None keeps the loaded SAM3's own.

    ``fallback`` is ``none`` for the published head too: its code never grounds a reply without ``<|seg|>`` (its
    check counts the two ``<|seg|>`` of the prompt), so such an image gets no region; ``texture_lines`` is opt-in.
    """

    prompts: PromptSet = field(default_factory=lambda: prompt_set(DEFAULT_PROMPT_SET))
    positions: str = "line_local"
    qwen_image: ImagePolicy = field(default_factory=ImagePolicy)
    logit_scale: float | None = None
    oracle_k: str = "cap"
    fallback: str = "none"
    embedding_shrink: float = 1.0
    image_resize: str = "separate"
    vocab_limit: int | None = None
    precision: str = "weights"
    sam3_vit_eps: float | None = None

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.positions, POSITION_MODES, "positions"),
                                     (self.oracle_k, ORACLE_K_POLICIES, "oracle_k"),
                                     (self.fallback, FALLBACKS, "fallback"),
                                     (self.image_resize, IMAGE_RESIZES, "image_resize"),
                                     (self.precision, PRECISIONS, "precision")):
            if value not in allowed:
                raise CheckpointError(f"contract {what} must be one of {', '.join(allowed)}, got {value!r}")
        _check_positive(self.embedding_shrink, "embedding_shrink")
        _check_positive(self.logit_scale, "logit_scale", optional=True)
        _check_positive(self.vocab_limit, "vocab_limit", integer=True, optional=True)
        _check_positive(self.sam3_vit_eps, "sam3_vit_eps", optional=True)

    def model_images(self, images: list[np.ndarray], side: int) -> list[np.ndarray]:
        """The RGB images both models are fed, in training batches as at inference: under ``shared_linear`` one
        INTER_LINEAR square of SAM3's ``side`` for both, else the images as they are (each model resizes its own)."""
        if self.image_resize == "shared_linear":
            return [resize_linear(image, side) for image in images]
        return images

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "InferenceContract":
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: the inference contract must be a mapping")
        known = {"prompts", "positions", "qwen_image", "logit_scale", "oracle_k", "fallback", "embedding_shrink",
                 "image_resize", "vocab_limit", "precision", "sam3_vit_eps"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"{where}: unknown inference-contract keys {unknown} (a newer Detecture wrote it?)")
        values = dict(raw)
        if "prompts" in values:
            values["prompts"] = PromptSet.from_dict(values["prompts"], where)
        image = values.get("qwen_image", {})
        if not isinstance(image, dict) or set(image) - {"mode", "max_pixels", "size"}:
            raise CheckpointError(f"{where}: qwen_image must be a mapping of mode, max_pixels, size")
        try:
            if "qwen_image" in values:
                values["qwen_image"] = ImagePolicy(**image)
            return cls(**values)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from None

    def summary(self) -> str:
        """One line per term, for ``detecture segment --show-contract``."""
        image = self.qwen_image
        seen = (f"square {image.size}x{image.size}" if image.mode == "square"
                else f"native, at most {image.max_pixels} pixels" if image.max_pixels else "native (hub limits)")
        scale = "1/sqrt(mask width)" if self.logit_scale is None else f"{self.logit_scale:g}"
        resize = ("one INTER_LINEAR square image for both models" if self.image_resize == "shared_linear"
                  else "each model its own, antialiased")
        precision = "bf16 autocast, fp32 weights" if self.precision == "bf16_autocast" else "as loaded"
        return "\n".join([
            f"prompt set:        {self.prompts.name} ({self.prompts.source})",
            f"re-encode:         {self.positions} positions",
            f"qwen image:        {seen}",
            f"mask logit scale:  {scale}",
            f"oracle K:          {'capped at N' if self.oracle_k == 'cap' else 'not capped (up to 6 lines kept)'}",
            f"no-<|seg|> lines:  {'grounded from TEXTURE_k text' if self.fallback == 'texture_lines' else 'dropped'}",
            f"embedding shrink:  {self.embedding_shrink:g}",
            f"image resize:      {resize}",
            f"vocabulary:        {'all ids' if self.vocab_limit is None else f'ids below {self.vocab_limit}'}",
            f"precision:         {precision}",
            f"SAM3 ViT LN eps:   {'as loaded' if self.sam3_vit_eps is None else f'{self.sam3_vit_eps:g}'}",
        ])


def legacy_contract() -> InferenceContract:
    """What a head saved without a contract was trained and run with: our prompts, line-local positions, the image
    through the hub preprocessor's limits only."""
    return InferenceContract(qwen_image=ImagePolicy(max_pixels=None))


def published_contract(embedding_shrink: float = 1.0) -> InferenceContract:
    """The published NeurIPS 2026 checkpoint's inference (docs/ARCHITECTURE.md, The published checkpoint)."""
    from ..backbones.sam3_convert import key_layout

    return InferenceContract(
        prompts=prompt_set(PUBLISHED_PROMPT_SET), positions="global",
        qwen_image=ImagePolicy(mode="square", max_pixels=None, size=1008), logit_scale=1.0, oracle_k="none",
        fallback="none", embedding_shrink=embedding_shrink, image_resize="shared_linear",
        vocab_limit=PUBLISHED_VOCABULARY, precision="bf16_autocast", sam3_vit_eps=float(key_layout()["vit_layer_norm_eps"]),
    )
