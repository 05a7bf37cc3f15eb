"""Qwen3-VL, the frozen vision-language model that names the texture regions.

Inputs are built here rather than with ``Qwen3VLProcessor``: that processor insists on a video processor, which
needs torchvision, while Detecture only ever sends still images. The chat layout is Qwen's own
(``<|im_start|>role ... <|im_end|>``), and each ``<|image_pad|>`` is expanded to the number of merged visual patches
exactly as the processor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BatchFeature,
    PreTrainedTokenizerBase,
    Qwen3VLForConditionalGeneration,
)

from ..bridge.contract import ImagePolicy, InferenceContract
from . import DEFAULT_QWEN, TINY_NAME
from ..prompt_sets import DEFAULT_PROMPT_SET, PromptSet, prompt_set
from ..images import as_rgb_array
from ..prompts import SYSTEM_PROMPT
from .loading import (
    bitsandbytes_config,
    default_attn_implementation,
    default_device,
    default_dtype,
    load_from_hub,
    recorded_name,
)
from .tokens import add_seg_token

IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"


def chat_prompt(user: str, system: str | None = SYSTEM_PROMPT) -> str:
    """Qwen chat text up to the assistant header, with one image placeholder before the user's words."""
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{head}<|im_start|>user\n{IMAGE_PLACEHOLDER}{user}<|im_end|>\n<|im_start|>assistant\n"


def fit_image(image: np.ndarray, policy: ImagePolicy) -> np.ndarray:
    """The image as Qwen must see it under ``policy`` (bilinear resize; unchanged when it already fits)."""
    size = policy.target_size(*image.shape[:2])
    if size is None:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


@dataclass
class QwenVL:
    """Qwen3-VL model + tokenizer + image processor, with the ``<|seg|>`` token installed.

    ``image_policy`` bounds what every caller (inference, training, mining, benchmark) feeds Qwen: by default at most
    SAM3's pixel count, so a phone photo does not become ~12k visual tokens. ``prompts`` is the conversation texture
    lines are asked for in. Both come from a head's contract (:meth:`apply_contract`) when one is attached.
    """

    model: Qwen3VLForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase
    image_processor: object
    name: str = "qwen3-vl"
    quantization: str | None = None  # bitsandbytes "4bit" / "8bit" it was loaded with, None for full precision
    image_policy: ImagePolicy = field(default_factory=ImagePolicy)
    prompts: PromptSet = field(default_factory=lambda: prompt_set(DEFAULT_PROMPT_SET))
    embedding_shrink: float = 1.0

    def __post_init__(self) -> None:
        self.seg_token_id = add_seg_token(self.model, self.tokenizer)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.end_token_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_token_id = self.tokenizer.pad_token_id

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | Path = DEFAULT_QWEN,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        quantization: str | None = None,
        trust_remote_code: bool = False,
    ) -> "QwenVL":
        """Load from a hub id or a local folder (``quantization``: None, "4bit" or "8bit" via bitsandbytes)."""
        dev = default_device(device)
        torch_dtype = default_dtype(dev, dtype)
        quant = bitsandbytes_config(quantization, torch_dtype)
        repo = str(model_id)

        def load() -> QwenVL:
            model = Qwen3VLForConditionalGeneration.from_pretrained(
                repo, dtype=torch_dtype, attn_implementation=default_attn_implementation(dev, attn_implementation),
                quantization_config=quant, device_map={"": dev} if quant is not None else None,
                trust_remote_code=trust_remote_code,
            )
            tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=trust_remote_code)
            image_processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=trust_remote_code)
            return cls(model=model, tokenizer=tokenizer, image_processor=image_processor, name=recorded_name(repo),
                       quantization=quantization)

        qwen = load_from_hub("Qwen3-VL model", repo, load)
        if quant is None:
            qwen.model.to(dev)
        qwen.model.eval().requires_grad_(False)
        return qwen

    @classmethod
    def tiny(cls, seed: int = 0) -> "QwenVL":
        """Same classes from a tiny random config and an offline tokenizer (tests, ``--tiny``)."""
        from .tiny import tiny_qwen_image_processor, tiny_qwen_model, tiny_qwen_tokenizer

        tokenizer = tiny_qwen_tokenizer()
        model = tiny_qwen_model(tokenizer, seed=seed).requires_grad_(False)
        return cls(model=model, tokenizer=tokenizer, image_processor=tiny_qwen_image_processor(), name=TINY_NAME)

    def apply_contract(self, contract: InferenceContract) -> None:
        """Run under a head's contract: its prompts, its Qwen image, and its embedding shrink (applied once)."""
        self.image_policy, self.prompts = contract.qwen_image, contract.prompts
        if contract.embedding_shrink != self.embedding_shrink:
            self._scale_embeddings(contract.embedding_shrink / self.embedding_shrink)
            self.embedding_shrink = contract.embedding_shrink

    @torch.no_grad()
    def _scale_embeddings(self, factor: float) -> None:
        """Multiply every row but ``<|seg|>``'s of the input embedding and LM head (once if tied): reproduces weights
        a training run's weight decay shrank, from the base model's rows."""
        embed = self.model.get_input_embeddings().weight
        out = self.model.get_output_embeddings()
        matrices = [embed] + ([out.weight] if out is not None and out.weight.data_ptr() != embed.data_ptr() else [])
        for weight in matrices:
            seg_row = weight[self.seg_token_id].clone()
            weight.mul_(factor)
            weight[self.seg_token_id] = seg_row

    def load_adapter(self, path: str | Path) -> None:
        """Apply a trained PEFT adapter (LoRA + ``<|seg|>`` rows) saved by ``detecture train`` or ``convert``.

        The adapter's trainable-token rows must be this tokenizer's ``<|seg|>`` id: a different id would silently
        train-free some other token's row and leave ``<|seg|>`` untrained.
        """
        from ..errors import CheckpointError
        from ..utils.adapter_files import read_adapter_config
        from ..utils.optional import peft_for

        rows = read_adapter_config(path).get("trainable_token_indices") or {}
        wrong = {name: ids for name, ids in rows.items() if list(ids) != [self.seg_token_id]}
        if wrong:
            raise CheckpointError(f"{path}: adapter trains token rows {wrong}, but this tokenizer's <|seg|> id is "
                                  f"{self.seg_token_id}; the adapter was made for another tokenizer")

        with peft_for(getattr(self.model, "hf_quantizer", None) is not None) as peft:
            self.model = peft.PeftModel.from_pretrained(self.model, str(path)).eval().requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def core(self) -> torch.nn.Module:
        """The ``Qwen3VLModel`` inside (through a PEFT wrapper if one is applied): hidden states, no LM head."""
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return model.model

    def get_rope_index(self, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return self.core.get_rope_index(**kwargs)

    def _image_features(self, images: Sequence[Image.Image | np.ndarray]) -> BatchFeature:
        """Pixel patches of (H, W, 3) arrays. The layout is stated: left to guess, the processor reads an image
        exactly 3 px tall as channels-first and Qwen sees other pixels."""
        arrays = [fit_image(as_rgb_array(im), self.image_policy) for im in images]
        return self.image_processor(images=arrays, return_tensors="pt", input_data_format="channels_last")

    def build_inputs(
        self,
        images: Sequence[Image.Image | np.ndarray],
        prompts: Sequence[str],
        responses: Sequence[str] | None = None,
        *,
        system: str | None = SYSTEM_PROMPT,
        end_response: bool = False,
    ) -> BatchFeature:
        """Tokenise one chat per image, left-padded to a common length.

        With ``responses`` the assistant text is appended (teacher forcing; ``end_response`` adds ``<|im_end|>``).
        Prompt and response are tokenised separately so BPE never merges across the boundary; ``prefix_length`` is
        the padded length of the prompt part, identical for every row, so the prompt's KV cache can be shared.
        """
        if len(prompts) != len(images) or (responses is not None and len(responses) != len(images)):
            raise ValueError("images, prompts and responses must have the same length")
        vision = self._image_features(images)
        merge = self.image_processor.merge_size ** 2
        tokens_per_image = (vision["image_grid_thw"].prod(-1) // merge).tolist()
        prompt_ids = []
        for prompt, n_tokens in zip(prompts, tokens_per_image):
            text = chat_prompt(prompt, system).replace("<|image_pad|>", "<|image_pad|>" * int(n_tokens))
            prompt_ids.append(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        prefix_length = max(len(ids) for ids in prompt_ids)
        response_ids = [[] for _ in prompts]
        if responses is not None:
            suffix = "<|im_end|>" if end_response else ""
            response_ids = [self.tokenizer(r + suffix, add_special_tokens=False)["input_ids"] for r in responses]
        suffix_length = max(len(ids) for ids in response_ids)
        batch = len(prompts)
        input_ids = torch.full((batch, prefix_length + suffix_length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            input_ids[row, prefix_length - len(p):prefix_length] = torch.tensor(p)
            attention_mask[row, prefix_length - len(p):prefix_length] = 1
            input_ids[row, prefix_length:prefix_length + len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[row, prefix_length:prefix_length + len(r)] = 1
        return BatchFeature({
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
            "prefix_length": torch.tensor(prefix_length),
        })

    def decode(self, ids: torch.Tensor) -> str:
        """Text of generated ids, keeping ``<|seg|>`` but dropping end/padding tokens."""
        keep = [int(i) for i in ids if int(i) not in (self.pad_token_id, self.end_token_id)]
        return self.tokenizer.decode(keep, skip_special_tokens=False)

    @torch.no_grad()
    def chat(
        self,
        images: Sequence[Image.Image | np.ndarray],
        user_prompt: str,
        system_prompt: str | None = None,
        max_new_tokens: int = 300,
    ) -> list[str]:
        """Free-form greedy answers, one per image (used e.g. by the miner's describer)."""
        inputs = self.build_inputs(images, [user_prompt] * len(images), system=system_prompt)
        prefix = int(inputs.pop("prefix_length"))
        out = self.model.generate(**inputs.to(self.device), max_new_tokens=max_new_tokens, do_sample=False)
        return [self.decode(row[prefix:]).strip() for row in out]
