"""Full-size Qwen3-VL / SAM3 *architectures* with random weights, for benchmarks on machines without the weights.

Timings and memory depend on the architecture, not on the weight values, so these configs (docs/ARCHITECTURE.md,
Backbones: 2B/4B/8B widths, 8.77B parameters for 8B; SAM3 840M) give representative numbers with no download.
``tiny`` runs the same code path at test size, so a GPU script can be dry-run on a CPU before its one chance on the
GPU.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import torch
from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Sam3Config, Sam3Model

from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.backbones.tiny import QWEN_SPECIAL_TOKENS, tiny_qwen_tokenizer, tiny_sam3_config, tiny_sam3_tokenizer

SIZES = ("tiny", "2b", "4b", "8b")
_FULL_ROPE = dict(head_dim=128, mrope_section=[24, 20, 20], vocab_size=151936)
QWEN_TEXT = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=False, head_dim=16, mrope_section=[4, 2, 2],
                 vocab_size=1024),
    "2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
               num_key_value_heads=8, tie_word_embeddings=True, **_FULL_ROPE),
    "4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True, **_FULL_ROPE),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False, **_FULL_ROPE),
}
QWEN_VISION = {
    "tiny": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, deepstack_visual_indexes=[0, 1]),
    "2b": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, deepstack_visual_indexes=[5, 11, 17]),
    "4b": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, deepstack_visual_indexes=[5, 11, 17]),
    "8b": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, deepstack_visual_indexes=[8, 16, 24]),
}


def random_qwen(size: str, device: torch.device, dtype: torch.dtype, image_pixels: int = 1008 * 1008) -> QwenVL:
    """Random-weight Qwen3-VL of ``size``, built directly in ``dtype`` on ``device`` (no float32 transient)."""
    tokenizer = tiny_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(QWEN_TEXT[size])
    mrope = text.pop("mrope_section")
    text.update(max_position_embeddings=262144,
                rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=mrope, mrope_interleaved=True))
    vision = dict(QWEN_VISION[size], patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=text["hidden_size"], num_position_embeddings=2304)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=text["tie_word_embeddings"])
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                         size={"shortest_edge": 56 * 56, "longest_edge": image_pixels})
    return QwenVL(model=model.requires_grad_(False), tokenizer=tokenizer, image_processor=processor,
                  name=f"random-qwen3-vl-{size}")


def random_qwen_4bit(size: str, device: torch.device, dtype: torch.dtype, folder: Path,
                     image_pixels: int = 1008 * 1008) -> QwenVL:
    """Random Qwen3-VL loaded as NF4 through the real loader (``QwenVL.from_pretrained(quantization="4bit")``).

    The random weights are written to ``folder`` first, so the quantised model is exactly what a user's 4-bit load
    of the published weights produces (which modules stay unquantised, PEFT's k-bit preparation), not a hand-made
    imitation. The bf16 copy is freed before loading, so peak memory afterwards is the 4-bit model's own.
    """
    qwen = random_qwen(size, device, dtype, image_pixels)
    qwen.model.save_pretrained(folder)
    qwen.tokenizer.save_pretrained(folder)
    qwen.image_processor.save_pretrained(folder)
    del qwen
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return QwenVL.from_pretrained(folder, device=device, dtype=dtype, quantization="4bit")


def random_sam3(device: torch.device, dtype: torch.dtype, size: str = "8b") -> Sam3Backbone:
    """Random SAM3 (one size: 840M) built in ``dtype``; ``size="tiny"`` gives the test-sized config instead."""
    tokenizer = tiny_sam3_tokenizer()
    config = tiny_sam3_config(len(tokenizer)) if size == "tiny" else Sam3Config()
    with torch.device(device):
        model = Sam3Model._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return Sam3Backbone(model=model, tokenizer=tokenizer, name="random-sam3")


def build_device() -> tuple[torch.device, torch.dtype]:
    """The benchmark device: the GPU in bf16 when there is one, else the CPU in float32.

    ``DETECTURE_BENCH_DTYPE=bfloat16`` forces bf16 backbones on the CPU too, so a dry run takes the GPU's dtype path.
    """
    forced = os.environ.get("DETECTURE_BENCH_DTYPE")
    if forced is not None and forced not in ("bfloat16", "float32"):
        raise ValueError(f"DETECTURE_BENCH_DTYPE must be bfloat16 or float32, got {forced!r}")
    if torch.cuda.is_available():
        return torch.device("cuda"), getattr(torch, forced or "bfloat16")
    return torch.device("cpu"), getattr(torch, forced or "float32")
