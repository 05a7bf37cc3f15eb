"""Inference: image(s) -> Qwen3-VL texture lines -> decoupled ``<|seg|>`` states -> Bridge -> SAM3 -> partition.

Two grounding modes share everything but the prompt fed to SAM3:

- ``bridge``: each ``<|seg|>`` hidden state goes through the trained head (Bridge, dustbin, mask head);
- ``text``: each generated *description* goes through SAM3's own text encoder and SAM3's semantic head, with a
  static dustbin at logit 0. It needs no trained weights beyond the public backbones.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .backbones import DEFAULT_MAX_NEW_TOKENS, TINY_NAME
from .backbones.qwen import QwenVL
from .backbones.sam3 import DEFAULT_SAM3, Sam3Backbone
from .bridge.contract import InferenceContract
from .bridge.head import DetectureHead, HeadConfig, default_qwen
from .errors import CheckpointError, InputError
from .images import as_rgb_array
from .prompts import MAX_TEXTURES, SEG_TOKEN, Regime, RegimeKind, format_response, parse_response, user_prompt
from .reencode import crop_cache, encode_prefix, seg_states, suffix_hidden_states
from .result import SegmentationResult
from .utils.timing import StageTimer

logger = logging.getLogger(__name__)

GROUNDINGS = ("bridge", "text")


def _generated_mask(suffix: torch.Tensor, end_token_id: int) -> torch.Tensor:
    """Valid generated tokens: everything up to and including the first end token of each row."""
    is_end = (suffix == end_token_id).long()
    return (torch.cumsum(is_end, dim=1) - is_end) == 0


def warn_other_quantization(config: HeadConfig, quantization: str | None, head: str | Path) -> None:
    """Say so when the Qwen is loaded with another quantization than the head was trained on (QLoRA trains on a
    4-bit Qwen): its hidden states differ slightly from those the Bridge was fitted to. Only a warning, since
    quantization is the user's memory choice and needs a GPU."""
    if quantization != config.qwen_quantization:
        trained, now = config.qwen_quantization or "full-precision", quantization or "full-precision"
        hint = f"; add --quantization {config.qwen_quantization} to run it as trained" if config.qwen_quantization else ""
        logger.warning("%s: the head was trained on a %s Qwen and runs on a %s one, whose hidden states differ "
                       "slightly%s", head, trained, now, hint)


def apply_contract(qwen: QwenVL, sam3: Sam3Backbone, contract: InferenceContract) -> None:
    """Put both backbones under a head's contract: the one place a contract changes them, used when a training run's
    parts are built (on every rank, before any step or feature caching) and by every pipeline. Each backbone's part
    is idempotent, so a pipeline built on backbones a run already put under the contract changes nothing."""
    qwen.apply_contract(contract)
    sam3.apply_contract(contract)


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the body (no Bridge dropout at inference), then back in the mode it was in: a
    pipeline built on the head a run is training must not leave it in eval mode."""
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


def _attach_head(qwen: QwenVL, head: DetectureHead, path: str | Path) -> None:
    """Check the head fits this Qwen, put Qwen under the head's contract and apply the LoRA + ``<|seg|>`` adapter
    trained with it, if any."""
    head.check_qwen_width(qwen.hidden_size, path)
    qwen.apply_contract(head.config.effective_contract)
    adapter = DetectureHead.adapter_path(path)
    if adapter is not None:
        qwen.load_adapter(adapter)


def fallback_response(response: str, truncated: bool) -> str | None:
    """The response with ``<|seg|>`` closing each ``TEXTURE_k:`` line, for a response that has texture lines but
    no ``<|seg|>`` at all (published rule: descriptions under 3 words and a truncated last line are left out);
    None when there is nothing to ground."""
    if SEG_TOKEN in response:
        return None
    lines = response.strip().splitlines()
    if truncated and lines:
        lines = lines[:-1]
    descriptions = [d for d in parse_response("\n".join(lines), require_seg=False) if len(d.split()) >= 3]
    return format_response(descriptions[:MAX_TEXTURES]) if descriptions else None


class DetecturePipeline:
    """Frozen Qwen3-VL + frozen SAM3 + (optionally) a trained head."""

    def __init__(self, qwen: QwenVL, sam3: Sam3Backbone, head: DetectureHead | None = None, *,
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS):
        self.qwen, self.sam3, self.head = qwen, sam3, head
        self.max_new_tokens = max_new_tokens
        self.timer = StageTimer()
        self.tiny = qwen.name == TINY_NAME
        if head is not None:
            head.check_sam3_widths(sam3)
        self.contract = head.config.effective_contract if head is not None else InferenceContract()
        apply_contract(qwen, sam3, self.contract)
        if head is not None:
            head.to(sam3.device)

    @classmethod
    def from_pretrained(
        cls,
        qwen: str | Path | None = None,
        sam3: str | Path = DEFAULT_SAM3,
        head: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        quantization: str | None = None,
        trust_remote_code: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> "DetecturePipeline":
        """Load both backbones (hub ids or local folders) and, if given, a trained head folder; ``qwen`` left out is
        the Qwen the head was trained on (:func:`~detecture.bridge.head.default_qwen`)."""
        # Fail on a bad head before spending minutes loading backbones.
        head_module = DetectureHead.from_pretrained(head) if head is not None else None
        qwen = qwen or default_qwen(head_module.config if head_module is not None else None, head)
        autocast = head_module is not None and head_module.config.effective_contract.precision == "bf16_autocast"
        qwen_vl = QwenVL.from_pretrained(qwen, device=device, dtype=dtype, attn_implementation=attn_implementation,
                                         quantization=quantization, trust_remote_code=trust_remote_code)
        if head_module is not None:
            warn_other_quantization(head_module.config, quantization, head)
            _attach_head(qwen_vl, head_module, head)
            head_module.eval()  # loaded for inference, like any from_pretrained model
        # under a bf16-autocast contract SAM3 keeps fp32 weights, as the head was trained with
        sam = Sam3Backbone.from_pretrained(sam3, device=device, dtype=torch.float32 if autocast else dtype,
                                           trust_remote_code=trust_remote_code)
        return cls(qwen_vl, sam, head_module, max_new_tokens=max_new_tokens)

    @classmethod
    def tiny(cls, seed: int = 0, with_head: bool = True, max_new_tokens: int = 24,
             head: str | Path | None = None) -> "DetecturePipeline":
        """Tiny random backbones of the real classes: runs anywhere, offline; outputs are meaningless.

        The head is random unless ``head`` names a checkpoint trained on tiny backbones (``detecture train --tiny``).
        """
        qwen, sam = QwenVL.tiny(seed), Sam3Backbone.tiny(seed)
        head_module = None
        if head is not None:
            head_module = DetectureHead.from_pretrained(head)
            _attach_head(qwen, head_module, head)
        elif with_head:
            torch.manual_seed(seed)
            head_module = DetectureHead(HeadConfig.for_backbones(qwen, sam))
        if head_module is not None:
            head_module.eval()  # built for inference, as from_pretrained's
        return cls(qwen, sam, head_module, max_new_tokens=max_new_tokens)

    # -- stages -------------------------------------------------------------------------------------------------

    def _precision(self):
        """SAM3 and the head under bfloat16 autocast when the contract says so (weights stay as loaded)."""
        if self.contract.precision == "bf16_autocast":
            return torch.autocast(device_type=self.sam3.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _language_inputs(self, images: list[np.ndarray], regime: Regime, forced: Sequence[str] | None,
                         grounding: str):
        """Qwen inputs with the response as suffix: generated greedily, or the forced text when given."""
        qwen = self.qwen
        prompts = [user_prompt(regime, qwen.prompts)] * len(images)
        system = qwen.prompts.system
        if forced is not None:
            with self.timer.stage("generate"):  # the prompt pass stands in for generation (same KV cache)
                inputs = qwen.build_inputs(images, prompts, list(forced), system=system).to(qwen.device)
                cache = encode_prefix(qwen, inputs) if grounding == "bridge" else None
            return inputs, cache
        with self.timer.stage("generate"):
            inputs = qwen.build_inputs(images, prompts, system=system).to(qwen.device)
            prefix_len = int(inputs["prefix_length"])
            out = qwen.model.generate(
                **{k: v for k, v in inputs.items() if k != "prefix_length"},
                max_new_tokens=self.max_new_tokens, do_sample=False, return_dict_in_generate=True,
                **self._vocabulary_limit(),
                # Rank-local, also during FSDP training (weights gathered): transformers would otherwise step every
                # rank in lockstep and wait for ranks that are not generating.
                synced_gpus=False,
            )
        suffix = out.sequences[:, prefix_len:]
        valid = _generated_mask(suffix, qwen.end_token_id)
        inputs["input_ids"] = out.sequences
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], valid.long()], dim=1)
        inputs["mm_token_type_ids"] = (out.sequences == qwen.image_token_id).int()
        cache = out.past_key_values
        crop_cache(cache, prefix_len)
        return inputs, cache

    def _vocabulary_limit(self) -> dict:
        """Generation arguments that keep greedy decoding to the contract's first ``vocab_limit`` ids (the published
        model had 151,670 rows; the extra ids of a larger embedding are candidates it never had)."""
        limit = self.contract.vocab_limit
        rows = self.qwen.model.get_output_embeddings().weight.shape[0]
        return {"suppress_tokens": list(range(limit, rows))} if limit is not None and rows > limit else {}

    def _max_regions(self, regime: Regime) -> int:
        """Regions kept per image: the regime's count, or up to 6 under a contract without the oracle-K cap; never
        more than the head has slots for (``num_slots`` may be below 7)."""
        wanted = MAX_TEXTURES if self.contract.oracle_k == "none" and regime.kind is RegimeKind.ORACLE \
            else regime.max_regions
        return min(wanted, self.head.config.max_regions) if self.head is not None else wanted

    def _seg_states(self, inputs, cache, regime: Regime) -> list[torch.Tensor]:
        """Per image, the states at its ``<|seg|>`` tokens. A batch whose replies hold none (an empty forced reply
        has no suffix at all to encode) grounds nothing: no re-encode pass, no states."""
        batch = inputs["input_ids"].shape[0]
        suffix = inputs["input_ids"][:, int(inputs["prefix_length"]):]
        if not bool((suffix == self.qwen.seg_token_id).any()):
            return [torch.zeros(0, self.qwen.hidden_size, dtype=self.qwen.dtype, device=self.qwen.device)] * batch
        with self.timer.stage("reencode"):
            hidden = suffix_hidden_states(self.qwen, inputs, cache, decoupled=True, use_cache=True,
                                          positions_mode=self.contract.positions)
            return seg_states(self.qwen, inputs, hidden, [self._max_regions(regime)] * batch)

    def _fallback_states(self, arrays: list[np.ndarray], responses: list[str], truncated: list[bool],
                         states: list[torch.Tensor], regime: Regime) -> list[str]:
        """Under a ``texture_lines`` contract, ground each image whose response has texture lines but no ``<|seg|>``
        by re-encoding it with ``<|seg|>`` closing each line (only those images; ``states`` updated in place).
        ``arrays`` are the images as given (:meth:`seg_states` fits them to the contract). Returns the responses the
        states belong to."""
        repaired = {b: fallback_response(r, t) for b, (r, t, s) in enumerate(zip(responses, truncated, states))
                    if s.shape[0] == 0}
        repaired = {b: r for b, r in repaired.items() if r is not None}
        if not repaired:
            return responses
        order = sorted(repaired)
        for b, s in zip(order, self.seg_states([arrays[b] for b in order], regime, [repaired[b] for b in order])):
            states[b] = s
        return [repaired.get(b, r) for b, r in enumerate(responses)]

    def _bridge_logits(self, states: list[torch.Tensor], vision) -> list[torch.Tensor]:
        with _eval_mode(self.head):
            with self.timer.stage("sam3"), self._precision():
                prompts, live = self.head.slot_prompts(states, self.sam3.model.text_projection)
                pixels = self.sam3.pixel_embeddings(vision, prompts[:, None, :], None, live.nonzero()[:, 0])
            with self.timer.stage("head"), self._precision():
                logits = self.head.mask_head(prompts, pixels).float()
        per_image, start = [], 0
        for b in range(len(states)):
            k = int(live[b].sum())
            slot_logits = logits[start:start + k]
            per_image.append(slot_logits[1:] - slot_logits[:1])
            start += k
        return per_image

    def _text_logits(self, descriptions: list[list[str]], vision) -> list[torch.Tensor]:
        texts = [d for per_image in descriptions for d in per_image]
        if not texts:
            return [torch.zeros(0, 1, 1) for _ in descriptions]
        with self.timer.stage("sam3"), self._precision():
            prompts, mask = self.sam3.text_prompts(texts)
            image_index = torch.tensor([b for b, d in enumerate(descriptions) for _ in d], device=prompts.device)
            pixels = self.sam3.pixel_embeddings(vision, prompts, mask, image_index)
        with self.timer.stage("head"), self._precision():
            logits = self.sam3.semantic_logits(pixels).float()
        per_image, start = [], 0
        for d in descriptions:
            per_image.append(logits[start:start + len(d)])
            start += len(d)
        return per_image

    # -- public API ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def seg_states(self, images: Sequence[Image.Image | np.ndarray], regime: Regime,
                   responses: Sequence[str]) -> list[torch.Tensor]:
        """What the Bridge grounds for the given responses: per image, the (K, H) hidden states at its ``<|seg|>``
        tokens from the decoupled re-encode pass, under this pipeline's contract (positions, image, K policy)."""
        if len(responses) != len(images):
            raise InputError(f"{len(responses)} responses for {len(images)} images")
        arrays = self.contract.model_images([as_rgb_array(im) for im in images], self.sam3.image_size)
        inputs, cache = self._language_inputs(arrays, regime, list(responses), "bridge")
        return self._seg_states(inputs, cache, regime)

    @torch.no_grad()
    def segment(
        self,
        images: Sequence[Image.Image | np.ndarray],
        regime: Regime | None = None,
        grounding: str = "bridge",
        forced_responses: Sequence[str] | None = None,
    ) -> list[SegmentationResult]:
        """Segment a batch of images (all with the same regime); one result per image, in order.

        ``forced_responses`` skips generation and uses the given assistant text (teacher forcing), e.g. with tiny
        random backbones, whose generations contain no texture lines.
        """
        regime = regime or Regime.autonomous()
        if grounding not in GROUNDINGS:
            raise InputError(f"grounding must be one of {', '.join(GROUNDINGS)}, got {grounding!r}")
        if grounding == "bridge" and self.head is None:
            raise CheckpointError("bridge grounding needs a trained head (--head PATH); "
                                  "use --grounding text for zero-shot results with the public weights")
        if forced_responses is not None and len(forced_responses) != len(images):
            raise InputError(f"{len(forced_responses)} forced responses for {len(images)} images")
        if not images:
            return []
        originals = [as_rgb_array(im) for im in images]
        sizes = [arr.shape[:2] for arr in originals]
        arrays = self.contract.model_images(originals, self.sam3.image_size)
        inputs, cache = self._language_inputs(arrays, regime, forced_responses, grounding)
        prefix_len = int(inputs["prefix_length"])
        responses = [self.qwen.decode(row) for row in inputs["input_ids"][:, prefix_len:]]
        with self.timer.stage("sam3"), self._precision():
            vision = self.sam3.vision_features(self.sam3.preprocess(arrays))
        if grounding == "bridge":
            states = self._seg_states(inputs, cache, regime)
            if self.contract.fallback == "texture_lines" and forced_responses is None:
                suffix = inputs["input_ids"][:, prefix_len:]
                truncated = [not bool((row == self.qwen.end_token_id).any()) for row in suffix]
                grounded = self._fallback_states(originals, responses, truncated, states, regime)
            else:
                grounded = responses
            logits = self._bridge_logits(states, vision)
            counts = [s.shape[0] for s in states]
            descriptions = [parse_response(r)[:k] for r, k in zip(grounded, counts)]
            descriptions = [d + [""] * (k - len(d)) for d, k in zip(descriptions, counts)]
        else:
            descriptions = [parse_response(r, require_seg=False)[: regime.max_regions] for r in responses]
            logits = self._text_logits(descriptions, vision)
        results = []
        for size, desc, resp, region_logits in zip(sizes, descriptions, responses, logits):
            if not desc:
                logger.warning("the model produced no <|seg|> line for an image; returning no regions")
            results.append(SegmentationResult(descriptions=desc, response=resp,
                                              region_logits=region_logits.float().cpu().numpy(),
                                              image_size=size,
                                              meta={"grounding": grounding, "contract": self.contract.to_dict()}))
        return results
