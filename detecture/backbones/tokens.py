"""The ``<|seg|>`` token: added after pre-training, so its embedding rows must be initialised deliberately.

Random rows are never emitted by generation (published live mIoU was exactly 0 in that state), so both the input
embedding row and the output (lm_head) row are warm-started from ``<|im_end|>``, a token the model already emits
at the end of every answer.
"""

from __future__ import annotations

import torch
from tokenizers import AddedToken
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..prompts import SEG_TOKEN

WARM_START_TOKEN = "<|im_end|>"


def add_seg_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Add ``<|seg|>`` to the tokenizer (if absent) and warm-start its rows; returns its id.

    Qwen's embedding matrix has spare rows beyond the tokenizer, so usually nothing is resized; when the new id does
    not fit, the embeddings are grown (never shrunk).
    """
    if SEG_TOKEN in tokenizer.get_vocab():
        return tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    tokenizer.add_tokens([AddedToken(SEG_TOKEN, special=True, normalized=False)], special_tokens=True)
    seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    source_id = tokenizer.convert_tokens_to_ids(WARM_START_TOKEN)
    embeddings = model.get_input_embeddings()
    if seg_id >= embeddings.weight.shape[0]:
        model.resize_token_embeddings(seg_id + 1, mean_resizing=False)
        embeddings = model.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight[seg_id] = embeddings.weight[source_id]
        output = model.get_output_embeddings()
        if output is not None and output.weight.data_ptr() != embeddings.weight.data_ptr():
            output.weight[seg_id] = output.weight[source_id]
    return seg_id
