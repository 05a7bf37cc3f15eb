"""SAM3 (``transformers``' ``Sam3Model``), the frozen segmenter that turns prompt tokens into dense masks.

Detecture does not use SAM3's 200 DETR object queries: each texture slot is a one-token prompt, and what it needs
is the prompt-conditioned per-pixel embedding of SAM3's mask decoder (prompt -> DETR encoder fusion -> prompt
cross-attention -> pixel decoder). :meth:`Sam3Backbone.pixel_embeddings` runs exactly that path, skipping the DETR
decoder, with the ViT+FPN vision features computed once per image and shared by all of its prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Sam3Model

from ..bridge.contract import InferenceContract
from ..images import as_rgb_array
from . import DEFAULT_SAM3, TINY_NAME
from .loading import default_device, default_dtype, load_from_hub, recorded_name

TEXT_PROMPT_LENGTH = 32  # what Sam3Processor pads text prompts to


@dataclass
class Sam3Backbone:
    model: Sam3Model
    tokenizer: PreTrainedTokenizerBase | None = None
    name: str = "sam3"

    def __post_init__(self) -> None:
        self.model.eval().requires_grad_(False)  # eval: DETR dropout defaults to 0.1

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | Path = DEFAULT_SAM3,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
    ) -> "Sam3Backbone":
        dev = default_device(device)
        torch_dtype = default_dtype(dev, dtype)
        repo = str(model_id)

        def load() -> Sam3Backbone:
            model = Sam3Model.from_pretrained(repo, dtype=torch_dtype, trust_remote_code=trust_remote_code)
            tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=trust_remote_code)
            return cls(model=model.to(dev), tokenizer=tokenizer, name=recorded_name(repo))

        return load_from_hub("SAM3 model", repo, load)

    @classmethod
    def tiny(cls, seed: int = 0) -> "Sam3Backbone":
        from .tiny import tiny_sam3_model, tiny_sam3_tokenizer

        tokenizer = tiny_sam3_tokenizer()
        return cls(model=tiny_sam3_model(len(tokenizer), seed=seed), tokenizer=tokenizer, name=TINY_NAME)

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.backbone_config.image_size

    @property
    def prompt_dim(self) -> int:
        """Width of the DETR prompt space (256 in the released model)."""
        return self.model.config.detr_encoder_config.hidden_size

    @property
    def text_hidden_size(self) -> int:
        """Input width of SAM3's frozen ``text_projection`` (1024): the Bridge's output width."""
        return self.model.text_projection.in_features

    @property
    def pixel_dim(self) -> int:
        return self.model.mask_decoder.pixel_decoder.out_channels

    @property
    def device(self) -> torch.device:
        return self.model.text_projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.text_projection.weight.dtype

    def preprocess(self, images: Sequence[np.ndarray | object]) -> torch.Tensor:
        """Resize to the square model size (bilinear, antialiased), scale to [0, 1], normalise with mean = std = 0.5.

        Matches ``Sam3ImageProcessor`` without needing torchvision.
        """
        size = self.image_size
        batch = []
        for image in images:
            arr = torch.from_numpy(np.array(as_rgb_array(image))).permute(2, 0, 1)[None].float()
            if arr.shape[-2:] != (size, size):
                arr = F.interpolate(arr, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            batch.append(arr[0])
        pixels = (torch.stack(batch).clamp(0, 255) / 255.0 - 0.5) / 0.5
        return pixels.to(self.device, self.dtype)

    def apply_contract(self, contract: InferenceContract) -> None:
        """Run under a head's contract: its ViT LayerNorm epsilon, when it names one. Idempotent, since training
        applies it once when a run is built and every pipeline built on the same SAM3 applies it again."""
        if contract.sam3_vit_eps is not None:
            self.set_vit_layer_norm_eps(contract.sam3_vit_eps)

    def set_vit_layer_norm_eps(self, eps: float) -> None:
        """Run the ViT's LayerNorms with ``eps``: Meta's ``sam3`` uses 1e-5, ``transformers``' config defaults to
        1e-6, and at the published head's scale the difference is measurable (tests/test_sam3_parity.py)."""
        for module in self.model.vision_encoder.backbone.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = eps

    def vision_features(self, pixel_values: torch.Tensor):
        return self.model.get_vision_features(pixel_values=pixel_values)

    @staticmethod
    def select_images(features, image_index: torch.Tensor):
        """Vision features for a batch of prompts, prompt i looking at image ``image_index[i]``.

        A single image is broadcast with ``expand`` (no copy); several images are gathered.
        """
        def pick(t: torch.Tensor) -> torch.Tensor:
            if t.shape[0] == 1:
                return t.expand(len(image_index), *t.shape[1:])
            return t.index_select(0, image_index.to(t.device))

        return type(features)(
            last_hidden_state=pick(features.last_hidden_state),
            fpn_hidden_states=tuple(pick(f) for f in features.fpn_hidden_states),
            fpn_position_encoding=tuple(pick(p) for p in features.fpn_position_encoding),
        )

    def pixel_embeddings(
        self,
        features,
        prompts: torch.Tensor,
        prompt_mask: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-pixel embeddings (N, C, h, w) conditioned on N prompts (N, L, D) in the DETR prompt space.

        Runs SAM3's DETR encoder and mask decoder as ``Sam3Model.forward`` does (the decoder's object-query branch is
        given a single dummy query, whose masks are discarded) and captures the pixel decoder's output.
        """
        n = prompts.shape[0]
        if image_index is None:
            image_index = torch.zeros(n, dtype=torch.long)
        if prompt_mask is None:
            prompt_mask = torch.ones(prompts.shape[:2], dtype=torch.bool, device=prompts.device)
        prompt_mask = prompt_mask.bool()
        feats = self.select_images(features, image_index)
        fpn = feats.fpn_hidden_states[:-1]
        pos = feats.fpn_position_encoding[:-1]
        encoded = self.model.detr_encoder(
            vision_features=[fpn[-1]], text_features=prompts, vision_pos_embeds=[pos[-1]], text_mask=prompt_mask,
        )
        captured: list[torch.Tensor] = []
        hook = self.model.mask_decoder.pixel_decoder.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            self.model.mask_decoder(
                decoder_queries=prompts.new_zeros(n, 1, prompts.shape[-1]),
                backbone_features=list(fpn),
                encoder_hidden_states=encoded.last_hidden_state,
                prompt_features=prompts,
                prompt_mask=prompt_mask,
            )
        finally:
            hook.remove()
        return captured[0]

    def semantic_logits(self, pixel_embeddings: torch.Tensor) -> torch.Tensor:
        """SAM3's own dense semantic-segmentation logit map (N, h, w) for each prompt's pixel embedding."""
        return self.model.mask_decoder.semantic_projection(pixel_embeddings)[:, 0]

    def text_prompts(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode phrases with SAM3's own text encoder: prompts (N, 32, D) and their mask (N, 32)."""
        if self.tokenizer is None:
            raise RuntimeError("this SAM3 backbone was built without a tokenizer; text grounding needs one")
        tokens = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=TEXT_PROMPT_LENGTH,
                                return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return out.pooler_output, tokens["attention_mask"].bool()
