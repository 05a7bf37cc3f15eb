"""The published inference as contract terms: a converted published head runs as the published code did (one
INTER_LINEAR square image for both models, generation over its 151,670 ids, bf16 autocast with fp32 weights, Meta's
ViT epsilon, no grounding of a reply without ``<|seg|>``); Detecture's own choices stay the default."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.benchmark.scoring import score_logits
from detecture.bridge.contract import InferenceContract, published_contract
from detecture.bridge.head import DetectureHead, HeadConfig
from detecture.errors import CheckpointError
from detecture.images import resize_linear
from detecture.pipeline import DetecturePipeline
from detecture.prompts import Regime


def _pipeline(contract: InferenceContract) -> DetecturePipeline:
    qwen, sam = QwenVL.tiny(0), Sam3Backbone.tiny(0)
    torch.manual_seed(0)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, contract=contract))
    return DetecturePipeline(qwen, sam, head, max_new_tokens=8)


def photo(height: int, width: int) -> np.ndarray:
    """A real photo (skimage's brick, grey, 512²) tiled to any size, as RGB."""
    tile = np.tile(skimage.data.brick()[..., None], (1, 1, 3))
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:height, :width])


def test_published_contract_terms_and_our_defaults():
    published, ours = published_contract(), InferenceContract()
    assert (published.fallback, published.image_resize, published.vocab_limit, published.precision,
            published.sam3_vit_eps) == ("none", "shared_linear", 151_670, "bf16_autocast", 1e-5)
    assert (ours.fallback, ours.image_resize, ours.vocab_limit, ours.precision, ours.sam3_vit_eps) == (
        "none", "separate", None, "weights", None)
    assert InferenceContract.from_dict(published.to_dict(), "x") == published
    for bad in ({"image_resize": "cubic"}, {"precision": "fp8"}, {"vocab_limit": 0}, {"sam3_vit_eps": -1.0}):
        with pytest.raises(CheckpointError):
            InferenceContract(**bad)


def test_resize_linear_is_the_inter_linear_equation_on_a_2400x1600_photo():
    """Reference: x_src = (x + 0.5) * W / 1008 - 0.5 clamped to [0, W - 1], two taps, rounded (OpenCV INTER_LINEAR's
    equation; OpenCV's 11-bit fixed point may differ from it by 1 grey level)."""
    image = photo(1600, 2400)
    out = resize_linear(image, 1008)

    def axis(n_src):
        src = np.clip((np.arange(1008) + 0.5) * n_src / 1008 - 0.5, 0, n_src - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_src - 1), src - i0

    y0, y1, ly = axis(1600)
    x0, x1, lx = axis(2400)
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - lx)[None, :, None] + img[y0][:, x1] * lx[None, :, None]
    bottom = img[y1][:, x0] * (1 - lx)[None, :, None] + img[y1][:, x1] * lx[None, :, None]
    exact = top * (1 - ly)[:, None, None] + bottom * ly[:, None, None]
    expected = np.round(exact).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == (1008, 1008, 3)
    differ = out != expected
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert np.all(np.abs(exact[differ] % 1 - 0.5) < 1e-6)  # only exact .5 ties, which rounding may send either way
    sam = Sam3Backbone.tiny(0)  # ours: SAM3 resizes the original with antialiasing
    ours = (sam.preprocess([image])[0].permute(1, 2, 0).numpy() + 1) * 127.5
    theirs = resize_linear(image, sam.image_size).astype(np.float64)
    assert np.abs(ours - theirs).max() > 10  # no low-pass filter: the published image aliases


def test_shared_linear_image_feeds_both_models_and_results_keep_the_original_size(monkeypatch):
    pipe = _pipeline(InferenceContract(image_resize="shared_linear"))
    image = photo(160, 240)
    seen = {}
    build = pipe.qwen.build_inputs
    monkeypatch.setattr(pipe.qwen, "build_inputs", lambda images, *a, **k: (seen.setdefault("qwen", images),
                                                                           build(images, *a, **k))[1])
    preprocess = pipe.sam3.preprocess
    monkeypatch.setattr(pipe.sam3, "preprocess", lambda images: (seen.setdefault("sam3", images),
                                                                 preprocess(images))[1])
    result = pipe.segment([image], Regime.oracle(2), forced_responses=[
        "TEXTURE_1: Texture of brick <|seg|>\nTEXTURE_2: Texture of stone <|seg|>"])[0]
    shared = resize_linear(image, pipe.sam3.image_size)
    assert np.array_equal(seen["qwen"][0], shared) and np.array_equal(seen["sam3"][0], shared)
    assert result.image_size == (160, 240) and result.logits.shape[1:] == (160, 240)


def test_seg_states_ground_the_image_segment_grounds_under_the_shared_resize(monkeypatch):
    """The public seg_states is what the Bridge grounds under the pipeline's contract: the shared square image too."""
    pipe = _pipeline(InferenceContract(image_resize="shared_linear"))
    image = photo(160, 240)
    response = "TEXTURE_1: Texture of brick <|seg|>\nTEXTURE_2: Texture of stone <|seg|>"
    grounded = []
    bridge_logits = pipe._bridge_logits
    monkeypatch.setattr(pipe, "_bridge_logits", lambda states, vision: (grounded.append(states),
                                                                         bridge_logits(states, vision))[1])
    pipe.segment([image], Regime.autonomous(), "bridge", [response])
    torch.testing.assert_close(pipe.seg_states([image], Regime.autonomous(), [response])[0], grounded[0][0])


def test_vocabulary_limit_keeps_generation_below_it():
    pipe = _pipeline(InferenceContract(vocab_limit=40))
    inputs, _ = pipe._language_inputs([photo(64, 64)], Regime.autonomous(), None, "text")
    generated = inputs["input_ids"][0, int(inputs["prefix_length"]):]
    assert len(generated) and (generated < 40).all()


def test_a_reply_without_seg_gets_no_region_under_the_published_contract():
    """Published: its fallback never runs (the prompt's two <|seg|> make every sequence 'have' one), so K = 0 and
    the published scorer gives 0 for the image."""
    pipe = _pipeline(published_contract())
    reply = "TEXTURE_1: Texture of red brick wall, regular blocks\nTEXTURE_2: Texture of green grass, fine blades"
    result = pipe.segment([photo(64, 64)], Regime.oracle(2), forced_responses=[reply])[0]
    assert result.region_logits.shape[0] == 0 and result.descriptions == []
    masks = np.zeros((2, 64, 64), bool)
    masks[0, :32], masks[1, 32:] = True, True
    score, _ = score_logits(result.region_logits, masks, protocol="published")
    assert score.k_pred == 0 and score.miou == 0.0


def test_bf16_autocast_runs_sam3_and_head_in_bf16_with_fp32_weights():
    forced = ["TEXTURE_1: Texture of brick <|seg|>\nTEXTURE_2: Texture of stone <|seg|>"]
    image = photo(64, 64)
    pipe = _pipeline(InferenceContract(precision="bf16_autocast"))
    pipe.contract = InferenceContract()  # the same backbones and head, first in the loaded (fp32) weights
    fp32 = pipe.segment([image], Regime.oracle(2), forced_responses=forced)[0]
    pipe.contract = pipe.head.config.contract
    dtypes = []
    hook = pipe.sam3.model.mask_decoder.pixel_decoder.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    bf16 = pipe.segment([image], Regime.oracle(2), forced_responses=forced)[0]
    hook.remove()
    assert dtypes == [torch.bfloat16]
    assert pipe.sam3.dtype == torch.float32 and pipe.head.mask_head.pixel_proj.weight.dtype == torch.float32
    a, b = torch.from_numpy(bf16.region_logits.ravel()), torch.from_numpy(fp32.region_logits.ravel())
    assert not torch.equal(a, b) and torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.98  # bf16 rounding only


def test_published_contract_runs_sam3_with_metas_vit_epsilon():
    norms = lambda pipe: {m.eps for m in pipe.sam3.model.vision_encoder.backbone.modules()  # noqa: E731
                          if isinstance(m, torch.nn.LayerNorm)}
    assert norms(_pipeline(published_contract())) == {1e-5}
    assert norms(_pipeline(InferenceContract())) == {Sam3Backbone.tiny(0).model.config.vision_config
                                                     .backbone_config.layer_norm_eps}
