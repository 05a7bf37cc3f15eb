"""A ``best.pt`` with the published checkpoint's structure at tiny width, for conversion tests.

The structure is described in docs/ARCHITECTURE.md, The published checkpoint.

Keys, dtypes (bf16), the full embedding / LM-head matrices with ``<|seg|>`` as their last row, the (1, 1, H) dustbin
and an AdamW ``state_dict`` with named parameter groups, as the published trainer saves them with ``torch.save``.
"""

from __future__ import annotations

from pathlib import Path

import torch

Q = "qwen.base_model.model.model.language_model."


def published_state(hidden: int, vocab: int, layers: int, q_out: int, v_out: int, text: int, prompt: int,
                    pixel: int, rank: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1):
        return (torch.randn(*shape, generator=g) * scale).to(torch.bfloat16)

    trainable = {}
    for i in range(layers):
        for proj, out in (("q_proj", q_out), ("v_proj", v_out)):
            trainable[f"{Q}layers.{i}.self_attn.{proj}.lora_A.default.weight"] = rand(rank, hidden)
            trainable[f"{Q}layers.{i}.self_attn.{proj}.lora_B.default.weight"] = rand(out, rank)
    trainable[f"{Q}embed_tokens.weight"] = rand(vocab, hidden)
    trainable["qwen.base_model.model.lm_head.weight"] = rand(vocab, hidden)
    trainable.update({
        "bridge.proj.0.weight": rand(text, hidden), "bridge.proj.0.bias": rand(text),
        "bridge.proj.1.weight": 1 + rand(text), "bridge.proj.1.bias": rand(text),
        "mask_head.query_mlp.0.weight": rand(prompt, prompt), "mask_head.query_mlp.0.bias": rand(prompt),
        "mask_head.query_mlp.2.weight": rand(prompt, prompt), "mask_head.query_mlp.2.bias": rand(prompt),
        "mask_head.pixel_head.weight": rand(prompt, pixel, 1, 1), "mask_head.pixel_head.bias": rand(prompt),
    })
    dustbin = rand(1, 1, hidden, scale=0.02)
    trainable["dustbin_embed"] = dustbin
    return {"epoch": 17, "phase": "stage2", "val_iou": 0.81, "optimizer": _adamw_state(trainable),
            "dustbin_embed": dustbin, "model_trainable": trainable}


def _adamw_state(trainable: dict[str, torch.Tensor]) -> dict:
    """One AdamW step over copies of the tensors, in the published named groups."""
    params = {k: torch.nn.Parameter(v.clone()) for k, v in trainable.items()}
    groups = {"qwen_lora": [k for k in params if "lora_" in k], "bridge": [k for k in params if k.startswith("bridge")],
              "mask_head": [k for k in params if k.startswith("mask_head")], "dustbin": ["dustbin_embed"],
              "seg_rows": [k for k in params if k.endswith(("embed_tokens.weight", "lm_head.weight"))]}
    opt = torch.optim.AdamW([{"params": [params[k] for k in keys], "name": name, "lr": 1e-4}
                             for name, keys in groups.items()], weight_decay=0.01)
    for p in params.values():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def write_published(path: Path, qwen, sam, seed: int = 0, **changes) -> dict:
    """Write a published-structure file sized for the given tiny backbones; ``changes`` edit model_trainable
    (a value of None deletes the key). Returns the state written."""
    text_cfg = qwen.model.config.text_config
    state = published_state(
        hidden=text_cfg.hidden_size, vocab=qwen.seg_token_id + 1, layers=text_cfg.num_hidden_layers,
        q_out=text_cfg.num_attention_heads * text_cfg.head_dim, v_out=text_cfg.num_key_value_heads * text_cfg.head_dim,
        text=sam.text_hidden_size, prompt=sam.prompt_dim, pixel=sam.pixel_dim, seed=seed,
    )
    for key, value in changes.items():
        if value is None:
            state["model_trainable"].pop(key)
        else:
            state["model_trainable"][key] = value
    torch.save(state, path)
    return state
