"""The SAM3 prompt path Detecture uses equals what ``Sam3Model.forward`` computes, with vision features reused."""

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling


def test_pixel_embeddings_match_full_forward(tiny_pipeline, texture_photos):
    sam = tiny_pipeline.sam3
    pixels = sam.preprocess([texture_photos["brick"]])
    prompts = torch.randn(3, 2, sam.prompt_dim)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    captured = []
    hook = sam.model.mask_decoder.pixel_decoder.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            out = sam.model(pixel_values=pixels.expand(3, -1, -1, -1),
                            text_embeds=BaseModelOutputWithPooling(pooler_output=prompts), attention_mask=mask)
    finally:
        hook.remove()
    with torch.no_grad():
        vision = sam.vision_features(pixels)
        ours = sam.pixel_embeddings(vision, prompts, mask)
        semantic = sam.semantic_logits(ours)
    torch.testing.assert_close(ours, captured[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(semantic, out.semantic_seg[:, 0], rtol=1e-4, atol=1e-5)


def test_text_prompt_path_builds_from_text_embeds(tiny_pipeline):
    """Guards the pinned transformers API: get_text_features must give per-token prompts in the DETR width."""
    sam = tiny_pipeline.sam3
    with torch.no_grad():
        prompts, mask = sam.text_prompts(["rough bark", "smooth water surface"])
    assert prompts.shape == (2, 32, sam.prompt_dim) and mask.shape == (2, 32)
    assert mask[:, 0].all() and not mask.all()


def test_vision_features_computed_once_per_image(tiny_pipeline, texture_photos):
    from detecture.prompts import Regime, format_response

    calls = []
    encoder = tiny_pipeline.sam3.model.vision_encoder
    hook = encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    images = [texture_photos["brick"], texture_photos["grass"]]
    responses = [format_response(["a", "b", "c"]), format_response(["d", "e"])]
    try:
        for grounding in ("bridge", "text"):
            calls.clear()
            tiny_pipeline.segment(images, Regime.oracle(3), grounding, forced_responses=responses)
            assert calls == [2]  # one batched vision pass for 2 images, shared by their 2 + 3 (+2 dustbin) prompts
    finally:
        hook.remove()
