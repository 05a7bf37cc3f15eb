"""SAM3 parity: Meta's ``sam3`` and Detecture's ``Sam3Model`` path give the head the same tensors.

Meta's classes are built at the tiny sizes with random weights (tests/meta_sam3.py), their state dict is converted
with ``detecture convert sam3``'s mapping into a tiny ``Sam3Model``, and each tensor the head consumes is compared,
read from Meta's model where the published code reads it. Tolerance: fp32, max abs diff <= 1e-5 x the tensor's max
abs value (measured: ~4e-6 on values up to ~15, i.e. ~3e-7 relative: rounding only). The one real difference found,
the ViT LayerNorm epsilon (Meta 1e-5, transformers' default 1e-6), is asserted to matter at this tolerance, so the
converted config's value is what makes the tensors agree.
"""

from __future__ import annotations

import gzip

import pytest
import torch
from transformers import Sam3Model

from detecture.backbones.sam3 import Sam3Backbone
from detecture.backbones.sam3_convert import (clip_tokenizer_from_bpe, convert_state_dict, key_layout,
                                              missing_bpe_message)
from detecture.backbones.sam3_parity import NAMES, compare, detecture_head_inputs, meta_head_inputs
from detecture.cli import main
import meta_sam3

try:
    meta_sam3.import_sam3_image_modules()
except ImportError as exc:  # pragma: no cover - CI installs sam3 + timm (.ci/run)
    pytest.skip(str(exc), allow_module_level=True)

RELATIVE_TOLERANCE = 1e-5
# The parts of Sam3Model the reduced Meta model holds (it has no geometry encoder, DETR decoder or scoring head).
IMAGE_PATH = ("vision_encoder.", "text_encoder.", "text_projection.", "detr_encoder.", "mask_decoder.")


@pytest.fixture(scope="module")
def pair():
    config = meta_sam3.reduced_config()
    meta = meta_sam3.build_reduced_meta_sam3(config, seed=0)
    config.vision_config.backbone_config.layer_norm_eps = float(key_layout()["vit_layer_norm_eps"])
    model = Sam3Model(config).eval()
    target = {k: v for k, v in model.state_dict().items() if k.startswith(IMAGE_PATH)}
    converted = convert_state_dict(meta.state_dict(), target)
    missing, unexpected = model.load_state_dict(converted.state_dict, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(IMAGE_PATH)]
    assert converted.dropped and all(k.endswith("attn.freqs_cis") for k in converted.dropped)
    generator = torch.Generator().manual_seed(1)
    size = config.vision_config.backbone_config.image_size
    pixels = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    bridge = torch.randn(3, config.text_config.hidden_size, generator=generator)
    return meta, Sam3Backbone(model=model, name="converted"), pixels, bridge


def within_tolerance(report: dict) -> dict[str, bool]:
    return {name: r["max_abs_diff"] <= RELATIVE_TOLERANCE * max(1.0, r["max_abs"]) for name, r in report.items()}


def test_head_inputs_match_meta_one_by_one(pair):
    meta, backbone, pixels, bridge = pair
    theirs = meta_head_inputs(meta, pixels, bridge)
    ours = detecture_head_inputs(backbone, pixels, bridge)
    report = compare(ours, theirs)
    assert set(report) == set(NAMES)
    assert all(within_tolerance(report).values()), report
    assert ours["pixel_embeddings"].shape == (3, backbone.pixel_dim, *theirs["fpn.0"].shape[-2:])
    assert report["prompts"]["max_abs_diff"] == 0.0  # the same Linear: the published resizer is our text_projection


def test_vit_layer_norm_epsilon_is_the_difference(pair):
    """With transformers' default epsilon the ViT features leave the tolerance; the converted value brings them in."""
    meta, backbone, pixels, bridge = pair
    norms = [m for m in backbone.model.vision_encoder.backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    theirs = meta_head_inputs(meta, pixels, bridge)
    try:
        for m in norms:
            m.eps = 1e-6
        report = compare(detecture_head_inputs(backbone, pixels, bridge), theirs)
    finally:
        for m in norms:
            m.eps = float(key_layout()["vit_layer_norm_eps"])
    ok = within_tolerance(report)
    assert not ok["fpn.2"] and not ok["pixel_embeddings"]
    assert ok["prompts"] and ok["position"]  # not downstream of the ViT


def test_unmatched_checkpoint_is_one_clear_error(pair, tmp_path, capsys):
    meta = pair[0]
    path = tmp_path / "sam3.pt"
    torch.save({"model": {f"detector.{k}": v for k, v in meta.state_dict().items()}}, path)
    bpe = tmp_path / "bpe.txt.gz"
    bpe.write_bytes(gzip.compress(b"header\nt h\nth e\n"))
    assert main(["convert", "sam3", str(path), "--out", str(tmp_path / "out"), "--bpe", str(bpe)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Sam3Model expects" in err and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_bpe_is_explained_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("detecture.backbones.sam3_convert.find_bpe", lambda: None)
    torch.save({"model": {}}, tmp_path / "sam3.pt")
    assert main(["convert", "sam3", str(tmp_path / "sam3.pt"), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "bpe_simple_vocab_16e6.txt.gz" in err and "open_clip" in err and "Traceback" not in err
    assert "open_clip/bpe_simple_vocab_16e6.txt.gz" in missing_bpe_message()


def test_clip_tokenizer_from_bpe_follows_clips_vocabulary_layout(tmp_path):
    bpe = tmp_path / "bpe.txt.gz"
    bpe.write_bytes(gzip.compress(b"\"bpe_simple_vocab_16e6.txt#version: 0.2\nt h\nth e</w>\n"))
    tok = clip_tokenizer_from_bpe(bpe)
    vocab = tok.get_vocab()
    # 256 byte symbols, the same 256 with </w>, then the merges in file order, then the two specials
    assert vocab["th"] == 512 and vocab["the</w>"] == 513
    assert vocab["<|startoftext|>"] == 514 and vocab["<|endoftext|>"] == 515
    assert tok("the")["input_ids"] == [514, 513, 515]
