"""Tiny random backbones of the real classes (Qwen3-VL, SAM3) plus offline tokenizers.

Nothing here downloads anything: the tokenizers are byte-level BPE models trained in memory on a fixed corpus, so the
same seed gives the same tokenizer and weights on every machine. Outputs are meaningless; shapes, control flow and
gradients are exactly those of the full-size models, which is what tests and ``--tiny`` runs need.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPTokenizerFast,
    Qwen2TokenizerFast,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Sam3Config,
    Sam3Model,
)

from ..prompts import SYSTEM_PROMPT, Regime, format_response, user_prompt

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]
TINY_IMAGE_SIZE = 64  # SAM3 input side; must equal its image_size (RoPE grid is precomputed)
TINY_QWEN_PIXELS = 64 * 64  # Qwen resizes each image to about this many pixels: 4 visual tokens after merging


def _corpus() -> list[str]:
    """Text the tiny tokenizers are trained on: our own prompts and texture words, so they tokenise compactly."""
    words = ("brick grass gravel bark stone sand water wood metal fabric rough smooth coarse fine striped dotted "
             "woven wavy left right top bottom centre center upper lower region surface pattern texture of with and "
             "the a grey green brown red blue dark light bright irregular regular granular fibrous glossy matte")
    texts = [SYSTEM_PROMPT, user_prompt(Regime.autonomous()), user_prompt(Regime.query("rough bark")), words]
    texts += [user_prompt(Regime.oracle(k)) for k in range(1, 7)]
    texts.append(format_response([f"Texture of {w}, fine grain, left" for w in words.split()[:6]]))
    return texts * 4


def _train_bpe(special_tokens: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


@lru_cache(maxsize=1)
def _qwen_tokenizer_json() -> str:
    return _train_bpe(QWEN_SPECIAL_TOKENS, vocab_size=600).to_str()


def tiny_qwen_tokenizer() -> Qwen2TokenizerFast:
    """A Qwen2-style tokenizer (same class and special tokens as Qwen3-VL's) trained offline."""
    tok = Qwen2TokenizerFast(
        tokenizer_object=Tokenizer.from_str(_qwen_tokenizer_json()),
        unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
    )
    tok.padding_side = "left"
    return tok


def tiny_qwen_image_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": TINY_QWEN_PIXELS, "longest_edge": TINY_QWEN_PIXELS},
    )


def tiny_qwen_config(vocab_size: int, tokenizer: Qwen2TokenizerFast) -> Qwen3VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=False,
            rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=[4, 2, 2], mrope_interleaved=True),
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_qwen_model(tokenizer: Qwen2TokenizerFast, seed: int = 0) -> Qwen3VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = tiny_qwen_config(len(tokenizer), tokenizer)
    config.text_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


@lru_cache(maxsize=1)
def _clip_tokenizer_json() -> str:
    return _train_bpe(["<|startoftext|>", "<|endoftext|>"], vocab_size=400).to_str()


def tiny_sam3_tokenizer() -> CLIPTokenizerFast:
    """A CLIP-class tokenizer for SAM3's text encoder (text grounding mode), trained offline."""
    return CLIPTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_clip_tokenizer_json()),
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        model_max_length=32,
    )


def tiny_sam3_config(text_vocab_size: int) -> Sam3Config:
    d = 32  # DETR width, the prompt space (256 in the real model)
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 image_size=TINY_IMAGE_SIZE, patch_size=8, window_size=4, global_attn_indexes=[1],
                                 pretrain_image_size=TINY_IMAGE_SIZE),
            fpn_hidden_size=d,
        ),
        text_config=dict(vocab_size=text_vocab_size, hidden_size=48, intermediate_size=64, projection_dim=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, bos_token_id=0,
                         eos_token_id=1),
        geometry_encoder_config=dict(hidden_size=d, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=d, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=d, num_layers=1, num_queries=8, num_attention_heads=2,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=d, num_upsampling_stages=2, num_attention_heads=2),
    )


def tiny_sam3_model(text_vocab_size: int, seed: int = 0) -> Sam3Model:
    torch.manual_seed(seed)
    return Sam3Model(tiny_sam3_config(text_vocab_size)).eval()
