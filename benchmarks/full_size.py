"""Full-size Qwen3-VL / SAM3 *architectures* with random weights, for benchmarks on machines without the weights.

Timings and memory depend on the architecture, not on the weight values, so these configs (DESIGN §5: 2B/4B/8B
widths, 8.77B parameters for 8B; SAM3 840M) give representative numbers with no download.
"""

from __future__ import annotations

import torch
from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Sam3Config, Sam3Model

from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.backbones.tiny import QWEN_SPECIAL_TOKENS, tiny_qwen_tokenizer, tiny_sam3_tokenizer

QWEN_TEXT = {
    "2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
               num_key_value_heads=8, tie_word_embeddings=True),
    "4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False),
}
QWEN_VISION = {
    "2b": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, deepstack_visual_indexes=[5, 11, 17]),
    "4b": dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, deepstack_visual_indexes=[5, 11, 17]),
    "8b": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, deepstack_visual_indexes=[8, 16, 24]),
}


def random_qwen(size: str, device: torch.device, dtype: torch.dtype, image_pixels: int = 1008 * 1008) -> QwenVL:
    tokenizer = tiny_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text = dict(QWEN_TEXT[size], vocab_size=151936, head_dim=128, max_position_embeddings=262144,
                rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=[24, 20, 20],
                                     mrope_interleaved=True))
    vision = dict(QWEN_VISION[size], patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  out_hidden_size=text["hidden_size"], num_position_embeddings=2304)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=text["tie_word_embeddings"])
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                         size={"shortest_edge": 56 * 56, "longest_edge": image_pixels})
    return QwenVL(model=model.requires_grad_(False), tokenizer=tokenizer, image_processor=processor,
                  name=f"random-qwen3-vl-{size}")


def random_sam3(device: torch.device, dtype: torch.dtype) -> Sam3Backbone:
    tokenizer = tiny_sam3_tokenizer()
    config = Sam3Config()
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = Sam3Model(config).to(dtype)
    return Sam3Backbone(model=model, tokenizer=tokenizer, name="random-sam3")
