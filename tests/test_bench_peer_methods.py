"""Peer methods that need no torchvision: ``grounding-sam3`` and ``texturesam`` end to end on tiny random models of
the real classes (Grounding-DINO with a Swin + BERT backbone, SAM3, SAM-2), saved to disk and loaded through each
method's own ``load()``, then run through the benchmark runner and its scoring.

Random weights give meaningless boxes and masks: these tests check shapes, regime handling, settings and the data
flow, never output values. Where a test needs masks to survive TextureSAM's thresholds, the tiny SAM-2's IoU and mask
heads are rescaled (still the real model, with larger logits).
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch
from bench_fixture import make_unified, mosaic
from PIL import Image

from detecture.benchmark.methods import MethodOptions, build_method
from detecture.benchmark.methods import grounding_sam3 as gs3
from detecture.benchmark.methods import texturesam as tsam
from detecture.benchmark.metrics import (
    MISSING_LOGIT,
    gt_label_map,
    partition,
    score_labels,
)
from detecture.benchmark.regimes import AUTONOMOUS, ORACLE, RegimeSpec, SampleRegime
from detecture.benchmark.runner import BenchConfig, cell_records, run_benchmark

BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
WORDS = ["texture", "brick", "grass", "gravel", "stone"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tiny models run thousands of small ops, where thread hand-offs dominate: on a shared 2-core machine one
    SAM-2 decoder call measured 0.58 s with 2 threads and 0.013 s with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bert_vocab() -> list[str]:
    """BERT's layout for the ids Grounding-DINO hard-codes ([CLS] 101, [SEP] 102, "." 1012, "?" 1029)."""
    vocab = [f"[unused{i}]" for i in range(1030)]
    for token, index in BERT_IDS.items():
        vocab[index] = token
    for i, word in enumerate(WORDS):
        vocab[200 + i] = word
    return vocab


def _save_tiny_grounding_dino(folder) -> None:
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir()
    vocab = _bert_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    # 128 px: the detector's extra 1/64 feature level stays > 1 pixel, which its GroupNorm needs
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 128, "longest_edge": 160})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                   image_size=64, out_features=["stage2", "stage3", "stage4"]),
        use_timm_backbone=False, use_pretrained_backbone=False,
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_feature_levels=4, encoder_n_points=2,
        decoder_n_points=2, max_text_len=16,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)


def _save_tiny_sam3(folder) -> None:
    from detecture.backbones.sam3 import Sam3Backbone

    backbone = Sam3Backbone.tiny(seed=0)
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)


def _tiny_sam2(masks_survive: bool):
    """A tiny ``Sam2Model`` (64² input). With ``masks_survive``, its IoU head predicts ≈ 0.99 and its mask logits are
    large, so masks pass TextureSAM's IoU (0.8) and stability (0.2, offset 1) filters."""
    from transformers import Sam2Config, Sam2Model

    d = 32
    config = Sam2Config(
        vision_config={
            "backbone_config": {
                "image_size": [64, 64], "hidden_size": 8, "num_attention_heads": 1, "blocks_per_stage": [1, 1, 2, 1],
                "embed_dim_per_stage": [8, 16, 32, 64], "num_attention_heads_per_stage": [1, 1, 1, 1],
                "window_size_per_stage": [4, 4, 4, 2], "global_attention_blocks": [3],
                "window_positional_embedding_background_size": [2, 2],
            },
            "backbone_channel_list": [64, 32, 16, 8], "backbone_feature_sizes": [[16, 16], [8, 8], [4, 4]],
            "fpn_hidden_size": d,
        },
        prompt_encoder_config={"hidden_size": d, "image_size": 64, "patch_size": 16},
        mask_decoder_config={"hidden_size": d, "mlp_dim": 64, "num_attention_heads": 2, "iou_head_hidden_dim": d},
    )
    torch.manual_seed(0)
    model = Sam2Model(config).eval()
    if masks_survive:
        with torch.no_grad():
            decoder = model.mask_decoder
            decoder.iou_prediction_head.proj_out.bias.fill_(5.0)
            for mlp in decoder.output_hypernetworks_mlps:
                mlp.proj_out.weight.mul_(1e6)
    return model


@pytest.fixture(scope="module")
def grounding_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounding")
    _save_tiny_grounding_dino(root / "dino")
    _save_tiny_sam3(root / "sam3")
    return {"grounding-dino": str(root / "dino"), "sam3": str(root / "sam3")}


@pytest.fixture(scope="module")
def grounding_method(grounding_models):
    """``grounding-sam3`` loaded through its own ``load()`` from the tiny checkpoints on disk."""
    method = build_method("grounding-sam3", MethodOptions(device="cpu", models=grounding_models))
    method.check()
    method.load()
    yield method
    method.close()


@pytest.fixture(scope="module")
def texturesam_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texturesam")
    _tiny_sam2(masks_survive=True).save_pretrained(folder)
    return str(folder)


def _reference_roi_align(features: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's CPU ``roi_align`` kernel (aligned=False, sampling_ratio=-1), transcribed loop for loop."""
    _, height, width = features.shape
    x0, y0, x1, y1 = box.tolist()
    roi_w, roi_h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    bin_w, bin_h = roi_w / size, roi_h / size
    grid_w, grid_h = int(np.ceil(roi_w / size)), int(np.ceil(roi_h / size))

    def bilinear(y: float, x: float) -> torch.Tensor:
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(features.shape[0])
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        return ((1 - ly) * (1 - lx) * features[:, y_low, x_low] + (1 - ly) * lx * features[:, y_low, x_high]
                + ly * (1 - lx) * features[:, y_high, x_low] + ly * lx * features[:, y_high, x_high])

    out = torch.zeros(features.shape[0], size, size)
    for ph in range(size):
        for pw in range(size):
            total = torch.zeros(features.shape[0])
            for iy in range(grid_h):
                for ix in range(grid_w):
                    total += bilinear(y0 + ph * bin_h + (iy + 0.5) * bin_h / grid_h,
                                      x0 + pw * bin_w + (ix + 0.5) * bin_w / grid_w)
            out[:, ph, pw] = total / (grid_h * grid_w)
    return out


def test_roi_align_matches_torchvisions_kernel():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 6, 7)
    boxes = [torch.tensor([[0.0, 0.0, 7.0, 6.0], [1.3, 0.7, 4.9, 5.2]]),
             torch.tensor([[-2.0, -1.5, 3.0, 2.0], [5.5, 4.2, 8.5, 7.9], [2.2, 2.2, 2.6, 2.4]])]  # off-edge, sub-px
    pooled = gs3.roi_align(features, boxes, 3)
    reference = [_reference_roi_align(features[i], b, 3) for i, bs in enumerate(boxes) for b in bs]
    assert pooled.shape == (5, 3, 3, 3)
    torch.testing.assert_close(pooled, torch.stack(reference), rtol=1e-5, atol=1e-5)


def test_roi_align_of_a_linear_ramp_is_the_ramp_at_bin_centres():
    """Bilinear sampling is exact on a linear function and each bin's samples are symmetric about its centre."""
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), indexing="ij")
    features = (2 * ys + 3 * xs)[None, None]
    pooled = gs3.roi_align(features, [torch.tensor([[1.0, 2.0, 7.0, 5.0]])], 3)[0, 0]
    centres_y, centres_x = 2.0 + torch.arange(3) + 0.5, 1.0 + 2 * torch.arange(3) + 1.0
    torch.testing.assert_close(pooled, 2 * centres_y[:, None] + 3 * centres_x[None, :])


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_sam3_roi_align_stand_in_is_scoped_to_the_call():
    modeling_sam3 = importlib.import_module("transformers.models.sam3.modeling_sam3")
    assert not hasattr(modeling_sam3, "torchvision")
    with gs3.roi_align_without_torchvision():
        assert modeling_sam3.torchvision.ops.roi_align is gs3.roi_align
    assert not hasattr(modeling_sam3, "torchvision")


def test_box_prompts_are_normalised_centre_size():
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])  # x0, y0, x1, y1 in a 100 (h) × 200 (w) image
    expected = torch.tensor([[20 / 200, 40 / 100, 20 / 200, 40 / 100]])
    torch.testing.assert_close(gs3.normalized_cxcywh(boxes, 100, 200), expected)


def test_peer_methods_need_no_torchvision():
    build_method("grounding-sam3", MethodOptions()).check()
    build_method("texturesam", MethodOptions(models={"texturesam": "ckpt"})).check()


def test_grounding_sam3_regimes_on_tiny_models(grounding_method, monkeypatch):
    monkeypatch.setattr(gs3, "BOX_THRESHOLD", 0.0)  # random scores: keep every box so the SAM3 path runs
    if importlib.util.find_spec("torchvision") is None:  # AutoProcessor fell back to the PIL image processor
        assert type(grounding_method.loaded["det_processor"].image_processor).__name__.endswith("Pil")
    seen_boxes = []
    hook = grounding_method.loaded["sam3"].model.geometry_encoder.register_forward_hook(
        lambda module, args, kwargs, out: seen_boxes.append(kwargs["box_embeddings"].clone()), with_kwargs=True)
    image, _ = mosaic(0, 48)
    try:
        two = grounding_method.segment(image, SampleRegime(ORACLE, 2, 2, "top-k-boxes"))
        one = grounding_method.segment(image, SampleRegime(ORACLE, 1, 1, "top-k-boxes"))
        auto = grounding_method.segment(image, SampleRegime(AUTONOMOUS, None, 2, "detector-boxes"))
        auto_other_k_gt = grounding_method.segment(image, SampleRegime(AUTONOMOUS, None, 5, "detector-boxes"))
    finally:
        hook.remove()
    assert two.logits.shape == (2, 48, 48) and one.logits.shape == (1, 48, 48)
    assert auto.logits.shape == (gs3.MAX_REGIONS, 48, 48)  # 10 queries, all above threshold 0: capped at 6
    np.testing.assert_array_equal(auto.logits, auto_other_k_gt.logits)  # autonomous: K_gt is never read
    for out in (two, one, auto):
        assert set(np.unique(out.logits)) <= {-5.0, 5.0}  # mask-only rule
    assert [b.shape for b in seen_boxes] == [(2, 1, 4), (1, 1, 4), (6, 1, 4), (6, 1, 4)]  # one box per prompt
    boxes, scores = grounding_method.detect(Image.fromarray(image), gs3.DEFAULT_PROMPT)
    best_two = gs3.normalized_cxcywh(gs3.select_boxes(boxes, scores, "top-k-boxes", 2), 48, 48)
    torch.testing.assert_close(seen_boxes[0][:, 0], best_two)  # the detector's two best boxes reached SAM3


def test_grounding_sam3_without_boxes_leaves_every_pixel_unassigned(grounding_method, monkeypatch):
    monkeypatch.setattr(gs3, "BOX_THRESHOLD", 1.01)  # no sigmoid score passes
    image, _ = mosaic(1, 40)
    out = grounding_method.segment(image, SampleRegime(ORACLE, 2, 2, "top-k-boxes"))
    assert out.logits.shape == (2, 40, 40) and (out.logits == MISSING_LOGIT).all()
    assert (partition(out.logits) == 0).all()
    assert grounding_method.segment(image, SampleRegime(AUTONOMOUS, None, 2, "detector-boxes")).logits.shape[0] == 0


def test_texturesam_drives_the_generator_with_texture_settings_over_every_grid_point():
    calls, prompts = [], []

    class SpyGenerator(tsam.Sam2MaskGenerator):
        def __call__(self, image, **kwargs):
            calls.append(kwargs)
            return super().__call__(image, **kwargs)

    model = _tiny_sam2(masks_survive=True)
    model.register_forward_pre_hook(lambda module, args, kwargs: prompts.append(kwargs), with_kwargs=True)
    method = build_method("texturesam", MethodOptions(models={"texturesam": "ckpt"}))
    method.loaded["generator"] = SpyGenerator(model)
    image = mosaic(2, 56)[0][:40]  # not square: SAM-2 places points by the image's own width and height
    out = method.segment(image, SampleRegime(ORACLE, 2, 2, "largest-k"))
    assert out.logits.shape == (2, 40, 56)
    assert calls[0]["points_per_crop"] == 64 and calls[0]["stability_score_thresh"] == 0.2
    assert calls[0]["pred_iou_thresh"] == 0.8 and calls[0]["multimask_output"] is False
    points = torch.cat([p["input_points"][0, :, 0] for p in prompts])
    assert max(p["input_points"].shape[1] for p in prompts) == tsam.POINTS_PER_BATCH
    assert not any(p["multimask_output"] for p in prompts)
    torch.testing.assert_close(points, tsam.point_grid(64) * 64)  # all 64² points, in the model's 64² input frame
    generated = SpyGenerator(model)(Image.fromarray(image), **calls[0])
    assert 0 < len(generated["masks"]) == len(generated["scores"]) and (generated["scores"] > 0.8).all()
    assert all(m.shape == (40, 56) and m.dtype == bool for m in generated["masks"])
    boxes = tsam.masks_to_boxes(torch.as_tensor(np.stack(generated["masks"])))
    assert len(tsam.box_nms(boxes, generated["scores"], 0.7)) == len(boxes)  # already NMS-clean


def test_box_nms_masks_to_boxes_and_stability():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5], [5, 5, 5, 5]])
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7, 0.6])
    assert tsam.box_nms(boxes, scores, 0.7).tolist() == [1, 2, 3, 4]  # box 0 overlaps box 1 by 0.81
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:7] = True
    assert tsam.masks_to_boxes(masks).tolist() == [[2, 1, 6, 2], [0, 0, 0, 0]]
    logits = torch.tensor([[[2.0, 0.5, -0.5, -2.0]]])  # > 1: one pixel; > -1: three
    torch.testing.assert_close(tsam.stability_scores(logits, 0.0, 1.0), torch.tensor([1 / 3]))


def _run(tmp_path, method: str, models: dict[str, str], regime: RegimeSpec, n: int = 2) -> list[dict]:
    root = make_unified(tmp_path / "set", n, size=48)
    out = tmp_path / f"out-{method}-{regime.label()}"
    config = BenchConfig(out=out, methods=[method], datasets=[str(root)], regime=regime, gallery=0,
                         options=MethodOptions(device="cpu", models=models))
    (cell,) = run_benchmark(config)
    return cell_records(cell, out)


@pytest.mark.parametrize("regime", [RegimeSpec(ORACLE, 2), RegimeSpec(AUTONOMOUS)], ids=["oracle2", "autonomous"])
def test_texturesam_runs_through_the_benchmark(tmp_path, texturesam_checkpoint, regime):
    # One sample per regime: each runs SAM-2 on all 64² grid points, and the regime plumbing is what is tested here.
    records = _run(tmp_path, "texturesam", {"texturesam": texturesam_checkpoint}, regime, n=1)
    assert [r["status"] for r in records] == ["ok"], records
    for r in records:
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["panoptic_iou"] <= 1.0 and r["k_gt"] == 2
        if regime.kind == ORACLE:
            assert r["k_out"] == 2
        else:
            assert 1 <= r["k_out"] <= tsam.MAX_REGIONS
        assert r["k_pred"] >= 1  # the rescaled tiny SAM-2 yields masks that survive TextureSAM's filters


def test_grounding_sam3_runs_through_the_benchmark(tmp_path, grounding_models, monkeypatch):
    monkeypatch.setattr(gs3, "BOX_THRESHOLD", 0.0)
    records = _run(tmp_path, "grounding-sam3", grounding_models, RegimeSpec(ORACLE, 2))
    assert [r["status"] for r in records] == ["ok", "ok"], records
    for r in records:
        assert r["k_out"] == 2 and r["k_gt"] == 2
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["panoptic_iou"] <= 1.0 and -1.0 <= r["ari"] <= 1.0


def test_largest_masks_feed_the_scoring_path():
    """Generator output → method logits → the one scoring path (masks stand in for the generator here)."""
    image, mask = mosaic(0, 32)
    method = build_method("texturesam", MethodOptions(models={"texturesam": "ckpt"}))
    method.loaded["generator"] = lambda img, **kwargs: {"masks": [mask, ~mask], "scores": torch.ones(2)}
    out = method.segment(image, SampleRegime(ORACLE, 2, 2, "largest-k"))
    score = score_labels(gt_label_map(np.stack([mask, ~mask])), partition(out.logits))
    assert score.miou == 1.0 and score.ari == 1.0
