"""The SAM3 tensors a Detecture head consumes, taken from both implementations, for parity checks.

The published head was trained on Meta's ``sam3`` package; Detecture runs ``transformers``' ``Sam3Model``.
:func:`meta_head_inputs` reads Meta's model exactly where the published code reads it (``backbone.forward_image``,
then ``transformer.encoder`` on the last FPN level with the one-token prompt and a zero prompt position, then the
segmentation head's prompt cross-attention and ``_embed_pixels``); :func:`detecture_head_inputs` reads the same
quantities from :class:`~detecture.backbones.sam3.Sam3Backbone`'s own path. Both return the same names, batch first:

``fpn.0..2`` the three FPN levels kept (B, C, h, w); ``position`` the position encoding of the level the encoder
reads; ``prompts`` the 1024 -> 256 projection of the Bridge output (N, D); ``encoder`` the DETR encoder's image
tokens (N, hw, D); ``attended`` the same after the prompt cross-attention (N, D, h, w); ``pixel_embeddings`` the
pixel decoder's output (N, D, H, W), which the mask head turns into logits.
"""

from __future__ import annotations

import torch

NAMES = ("fpn.0", "fpn.1", "fpn.2", "position", "prompts", "encoder", "attended", "pixel_embeddings")


@torch.no_grad()
def meta_head_inputs(model, pixel_values: torch.Tensor, bridge_outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Meta's ``Sam3Image`` (or any module with its ``backbone``/``transformer``/``segmentation_head``) on one
    image (1, 3, S, S) and N Bridge outputs (N, 1024)."""
    backbone_out = model.backbone.forward_image(pixel_values)
    fpn, pos = backbone_out["backbone_fpn"], backbone_out["vision_pos_enc"]
    prompts = model.backbone.language_backbone.resizer(bridge_outputs)
    n = prompts.shape[0]
    image_ids = torch.zeros(n, dtype=torch.long, device=prompts.device)
    size = fpn[-1].shape[-2:]
    src = fpn[-1][image_ids].flatten(2).permute(2, 0, 1)  # (hw, N, C): sequence first, as Meta's encoder wants
    src_pos = pos[-1][image_ids].flatten(2).permute(2, 0, 1)
    prompt = prompts[None]  # (1, N, D)
    memory = model.transformer.encoder(
        src=[src], src_key_padding_mask=None, src_pos=[src_pos], prompt=prompt, prompt_pos=torch.zeros_like(prompt),
        prompt_key_padding_mask=None, feat_sizes=[size],
    )["memory"]
    head = model.segmentation_head
    attended = memory + head.cross_attend_prompt(query=head.cross_attn_norm(memory), key=prompt, value=prompt)[0]
    pixel = head._embed_pixels(backbone_feats=fpn, image_ids=image_ids, encoder_hidden_states=attended)
    out = {f"fpn.{i}": f for i, f in enumerate(fpn)}
    out.update(position=pos[-1], prompts=prompts, encoder=memory.transpose(0, 1),
               attended=attended.permute(1, 2, 0).reshape(n, -1, *size), pixel_embeddings=pixel)
    return out


@torch.no_grad()
def detecture_head_inputs(backbone, pixel_values: torch.Tensor, bridge_outputs: torch.Tensor
                          ) -> dict[str, torch.Tensor]:
    """The same tensors from a :class:`~detecture.backbones.sam3.Sam3Backbone`, through the methods inference runs
    (``vision_features``, ``text_projection``, ``pixel_embeddings``); intermediate ones are captured with hooks."""
    features = backbone.vision_features(pixel_values)
    prompts = backbone.model.text_projection(bridge_outputs)
    captured: dict[str, torch.Tensor] = {}
    model = backbone.model
    hooks = [
        model.detr_encoder.register_forward_hook(
            lambda m, i, o: captured.__setitem__("encoder", o.last_hidden_state)),
        model.mask_decoder.pixel_decoder.register_forward_pre_hook(
            lambda m, args: captured.__setitem__("attended", args[0][-1])),
    ]
    try:
        pixel = backbone.pixel_embeddings(features, prompts[:, None])
    finally:
        for hook in hooks:
            hook.remove()
    fpn = features.fpn_hidden_states[:-1]
    out = {f"fpn.{i}": f for i, f in enumerate(fpn)}
    out.update(position=features.fpn_position_encoding[len(fpn) - 1], prompts=prompts,
               encoder=captured["encoder"], attended=captured["attended"], pixel_embeddings=pixel)
    return out


def compare(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per tensor: max abs difference, and the max abs value of Meta's tensor (for scale)."""
    report = {}
    for name in NAMES:
        a, b = ours[name].float(), theirs[name].float()
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape {tuple(a.shape)} (Detecture) vs {tuple(b.shape)} (Meta)")
        report[name] = {"max_abs_diff": float((a - b).abs().max()), "max_abs": float(b.abs().max())}
    return report
