"""Decoupled re-encode: the hidden state of each ``<|seg|>`` token, seeing the prompt and its own line only.

During generation, line k's ``<|seg|>`` attends to every earlier line, and its state absorbs their descriptions
(published: cosine similarity between SEG states rose from ~0.16 to ~0.74). The re-encode pass uses a
block-diagonal mask over texture lines, causal inside a line, with the shared prefix (system + image + user +
assistant header) visible to all. Only the generated *suffix* is re-encoded: the prefix's keys and values do not
depend on the suffix, so its KV cache (from generation, or one prefix pass) is reused.

Qwen3-VL uses multimodal rotary positions; with a custom 4-D mask they must be computed from the full sequence
(``get_rope_index`` with the 2-D padding mask) and passed in explicitly, or results are silently wrong. With
``positions="line_local"`` (Detecture's heads) suffix positions restart at each line (:func:`line_local_positions`),
so a SEG state depends on the prompt and its own line only, not even on the length of the lines before it;
``"global"`` keeps the sequence's own positions (the published heads were trained so).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .backbones.loading import attention_implementation


def line_ids(suffix_ids: torch.Tensor, seg_token_id: int) -> torch.Tensor:
    """Line index of every suffix token: line k runs from just after the (k-1)-th SEG through the k-th SEG."""
    is_seg = (suffix_ids == seg_token_id).long()
    return torch.cumsum(is_seg, dim=1) - is_seg


def line_local_positions(positions: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    """Suffix rotary positions restarted at every line, as if each line were the first after the prompt.

    With the block-diagonal mask alone, line k's positions still depend on the *length* of earlier lines (its
    distance to the prompt changes); restarting them makes a SEG state a function of the prompt and its own line
    only. ``positions`` (3, B, S) are the suffix's full-sequence positions (text tokens: all 3 rows equal).
    """
    index = torch.arange(lines.shape[1], device=lines.device).expand_as(lines)
    is_start = torch.ones_like(lines, dtype=torch.bool)
    is_start[:, 1:] = lines[:, 1:] != lines[:, :-1]
    start = torch.cummax(torch.where(is_start, index, torch.zeros_like(index)), dim=1).values
    return positions[:, :, :1] + (index - start)[None]


def decoupled_attention_mask(
    prefix_mask: torch.Tensor,
    suffix_mask: torch.Tensor,
    lines: torch.Tensor,
    dtype: torch.dtype,
    *,
    include_prefix_rows: bool = False,
) -> torch.Tensor:
    """Additive 4-D mask (B, 1, Q, P + S) for the suffix rows (and optionally the prefix rows before them).

    Suffix token i sees valid prefix tokens, and suffix tokens j <= i of the same line. Padding is never seen.
    Padded suffix rows see the prefix only (any non-empty row avoids NaNs; their outputs are ignored). With
    ``include_prefix_rows`` the prefix rows are causal over the valid prefix: the mask for a full-sequence pass.
    """
    batch, prefix_len = prefix_mask.shape
    suffix_len = suffix_mask.shape[1]
    prefix_ok = prefix_mask.bool()[:, None, :].expand(batch, suffix_len, prefix_len)
    causal = torch.ones(suffix_len, suffix_len, dtype=torch.bool, device=lines.device).tril()
    same_line = lines[:, :, None] == lines[:, None, :]
    suffix_ok = causal & same_line & suffix_mask.bool()[:, None, :] & suffix_mask.bool()[:, :, None]
    allowed = torch.cat([prefix_ok, suffix_ok], dim=2)
    if include_prefix_rows:
        prefix_causal = torch.ones(prefix_len, prefix_len, dtype=torch.bool, device=lines.device).tril()
        prefix_rows = prefix_causal & prefix_mask.bool()[:, None, :]
        prefix_rows = prefix_rows | torch.eye(prefix_len, dtype=torch.bool, device=lines.device)  # padded rows
        no_suffix = torch.zeros(batch, prefix_len, suffix_len, dtype=torch.bool, device=lines.device)
        allowed = torch.cat([torch.cat([prefix_rows, no_suffix], dim=2), allowed], dim=1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Drop everything after the first ``length`` positions (the prompt), so the cache can serve another suffix."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def rope_positions(qwen, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_grid_thw: torch.Tensor):
    """Multimodal rotary positions (3, B, T) of a full prompt + suffix sequence (padding ignored)."""
    return qwen.get_rope_index(
        input_ids=input_ids, mm_token_type_ids=(input_ids == qwen.image_token_id).int(),
        image_grid_thw=image_grid_thw, attention_mask=attention_mask,
    )[0]


def encode_prefix(qwen, inputs) -> DynamicCache:
    """One causal pass over the prompt (with the image) that fills a KV cache for the suffix passes."""
    prefix_len = int(inputs["prefix_length"])
    ids = inputs["input_ids"][:, :prefix_len]
    mask = inputs["attention_mask"][:, :prefix_len]
    positions = rope_positions(qwen, ids, mask, inputs["image_grid_thw"])
    cache = DynamicCache(config=qwen.core.config)
    qwen.core(
        input_ids=ids, attention_mask=mask, position_ids=positions, pixel_values=inputs["pixel_values"],
        image_grid_thw=inputs["image_grid_thw"], mm_token_type_ids=(ids == qwen.image_token_id).int(),
        past_key_values=cache, use_cache=True,
    )
    return cache


def suffix_hidden_states(
    qwen,
    inputs,
    cache: DynamicCache | None = None,
    *,
    decoupled: bool = True,
    use_cache: bool = True,
    positions_mode: str = "line_local",
) -> torch.Tensor:
    """Last-layer hidden states (B, S, H) of the suffix ``inputs["input_ids"][:, prefix_length:]``.

    ``decoupled`` selects the block-diagonal mask (else plain causal). With ``use_cache`` the suffix is encoded over
    the prefix KV cache (computed here if not given; it is cropped back to the prefix afterwards so it can be
    reused); without it the whole sequence is re-encoded, which is the reference the cached path must equal.
    ``positions_mode`` is the head contract's re-encode position mode (``line_local`` or ``global``).
    """
    prefix_len = int(inputs["prefix_length"])
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    suffix_ids = input_ids[:, prefix_len:]
    positions = rope_positions(qwen, input_ids, attention_mask, inputs["image_grid_thw"])
    lines = line_ids(suffix_ids, qwen.seg_token_id)
    if decoupled and positions_mode == "line_local":
        positions = torch.cat([positions[:, :, :prefix_len],
                               line_local_positions(positions[:, :, prefix_len:], lines)], dim=2)
    elif not decoupled:
        lines = torch.zeros_like(lines)
    with attention_implementation(qwen.model, "sdpa"):
        if use_cache:
            if cache is None:
                cache = encode_prefix(qwen, inputs)
            mask = decoupled_attention_mask(attention_mask[:, :prefix_len], attention_mask[:, prefix_len:], lines,
                                            qwen.dtype)
            out = qwen.core(input_ids=suffix_ids, attention_mask=mask, position_ids=positions[:, :, prefix_len:],
                            past_key_values=cache, use_cache=True)
            crop_cache(cache, prefix_len)
            return out.last_hidden_state
        mask = decoupled_attention_mask(attention_mask[:, :prefix_len], attention_mask[:, prefix_len:], lines,
                                        qwen.dtype, include_prefix_rows=True)
        out = qwen.core(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"], mm_token_type_ids=(input_ids == qwen.image_token_id).int(),
            use_cache=False,
        )
        return out.last_hidden_state[:, prefix_len:]


def seg_states(qwen, inputs, hidden: torch.Tensor, max_regions: list[int] | None = None) -> list[torch.Tensor]:
    """Per image, the hidden states (K_i, H) at the suffix's ``<|seg|>`` tokens (the first ``max_regions[i]``)."""
    prefix_len = int(inputs["prefix_length"])
    suffix_ids = inputs["input_ids"][:, prefix_len:]
    valid = inputs["attention_mask"][:, prefix_len:].bool()
    states = []
    for b in range(suffix_ids.shape[0]):
        positions = ((suffix_ids[b] == qwen.seg_token_id) & valid[b]).nonzero().squeeze(1)
        if max_regions is not None:
            positions = positions[: max_regions[b]]
        states.append(hidden[b, positions])
    return states
