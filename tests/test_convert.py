"""``detecture convert published``: a published-structure best.pt at tiny width becomes a head + adapter that runs
the published head equations, carries the published contract, and refuses malformed files with one clear error."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.bridge.contract import published_contract
from detecture.cli import main
from detecture.pipeline import DetecturePipeline
from detecture.prompts import Regime, format_response
from published_fixture import Q, write_published

EMBED, LM_HEAD = f"{Q}embed_tokens.weight", "qwen.base_model.model.lm_head.weight"


class Stranger:
    """A class the safe loader must refuse to unpickle."""


@pytest.fixture(scope="module")
def backbones():
    return QwenVL.tiny(0), Sam3Backbone.tiny(0)


@pytest.fixture(scope="module")
def converted(backbones, tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    state = write_published(root / "best.pt", *backbones)
    assert main(["convert", "published", str(root / "best.pt"), "--out", str(root / "head")]) == 0
    return root, state


@pytest.fixture(scope="module")
def pipeline(converted):
    return DetecturePipeline.tiny(head=converted[0] / "head")


def published_logits(t: dict, seg_states: torch.Tensor, dustbin: torch.Tensor, text_projection, pixel_embed):
    """The published head written out: Linear -> LayerNorm -> GELU -> SAM3 projection -> query MLP, dotted with a
    1x1 conv of the pixel embedding, no scale (models/bridge.py, models/qwen2sam_detecture.py)."""
    f = {k: v.float() for k, v in t.items() if not k.startswith("qwen.")}
    slots = torch.cat([dustbin.reshape(1, -1).float(), seg_states.float()])
    x = slots @ f["bridge.proj.0.weight"].T + f["bridge.proj.0.bias"]
    x = F.gelu(F.layer_norm(x, x.shape[-1:], f["bridge.proj.1.weight"], f["bridge.proj.1.bias"]))
    q = text_projection(x)
    q = F.gelu(q @ f["mask_head.query_mlp.0.weight"].T + f["mask_head.query_mlp.0.bias"])
    q = q @ f["mask_head.query_mlp.2.weight"].T + f["mask_head.query_mlp.2.bias"]
    w = f["mask_head.pixel_head.weight"][:, :, 0, 0]
    pixels = torch.einsum("oc,nchw->nohw", w, pixel_embed) + f["mask_head.pixel_head.bias"][None, :, None, None]
    return torch.einsum("nc,nchw->nhw", q, pixels)


def test_head_logits_follow_the_published_equations(converted, pipeline):
    _, state = converted
    head, sam = pipeline.head, pipeline.sam3
    states = torch.randn(3, head.config.qwen_hidden_size)
    prompts, live = head.slot_prompts([states], sam.model.text_projection)
    pixel_embed = torch.randn(4, head.config.pixel_dim, 8, 8)
    ours = head.mask_head(prompts, pixel_embed)
    with torch.no_grad():
        theirs = published_logits(state["model_trainable"], states, state["dustbin_embed"],
                                  sam.model.text_projection, pixel_embed)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_contract_and_adapter(converted, pipeline):
    root, state = converted
    t = state["model_trainable"]
    qwen = pipeline.qwen
    assert pipeline.contract == published_contract()
    config = json.loads((root / "head" / "config.json").read_text())
    assert config["extra"]["converted_from"]["seg_index"] == qwen.seg_token_id
    seg = torch.tensor([[qwen.seg_token_id]])
    assert torch.equal(qwen.model.get_input_embeddings()(seg)[0, 0], t[EMBED][-1].float())
    hidden = torch.randn(1, 1, qwen.hidden_size)
    logits = qwen.model.get_output_embeddings()(hidden)[0, 0, qwen.seg_token_id]
    assert torch.allclose(logits, hidden[0, 0] @ t[LM_HEAD][-1].float(), atol=1e-5)
    found = 0
    for name, module in qwen.model.named_modules():
        if name.endswith(("self_attn.q_proj", "self_attn.v_proj")) and "language_model" in name:
            key = f"{Q}{name.split('language_model.')[1]}"
            assert torch.equal(module.lora_A["default"].weight, t[f"{key}.lora_A.default.weight"].float())
            assert torch.equal(module.lora_B["default"].weight, t[f"{key}.lora_B.default.weight"].float())
            found += 1
    assert found == 2 * qwen.model.config.text_config.num_hidden_layers


def test_converted_head_segments_under_the_published_protocol(pipeline, texture_photos):
    lines = [f"Texture of {w} surface, fine grain, left" for w in ("brick", "grass", "gravel")]
    result = pipeline.segment([texture_photos["brick"][:80, :96]], Regime.oracle(2),
                              forced_responses=[format_response(lines)])[0]
    assert result.num_regions == 3  # published: no oracle-K cap
    assert np.isfinite(result.region_logits).all()


def test_input_is_never_overwritten_and_out_must_be_new(converted, capsys):
    root, _ = converted
    best = root / "best.pt"
    before = best.stat().st_mtime_ns
    assert main(["convert", "published", str(best), "--out", str(best)]) == 2
    assert main(["convert", "published", str(best), "--out", str(root / "head")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "overwrite the input" in err[0] and "already exists" in err[1]
    assert best.stat().st_mtime_ns == before


@pytest.mark.parametrize("layout, options, named, owner", [
    ("published", ["--bpe", "vocab.txt.gz", "--tokenizer", "tok"], "--bpe, --tokenizer", "sam3"),
    ("sam3", ["--qwen", "Qwen/Qwen3-VL-8B-Instruct"], "--qwen", "published"),
    ("sam3", ["--base", "Qwen/Qwen3-VL-8B-Instruct"], "--base", "published"),  # the older spelling, named as typed
])
def test_an_option_of_the_other_layout_is_refused_not_ignored(converted, tmp_path, capsys, layout, options, named,
                                                               owner):
    best = converted[0] / "best.pt"
    assert main(["convert", layout, str(best), "--out", str(tmp_path / "out"), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{named} appl" in err[0] and f"layout '{owner}' only, not to '{layout}'" in err[0], err
    assert not (tmp_path / "out").exists()


def test_qwen_and_its_older_spelling_naming_two_models_are_refused(tmp_path, capsys):
    """--base is --qwen's older spelling: keeping either model would ignore the other."""
    argv = ["convert", "published", str(tmp_path / "best.pt"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--base", "Qwen/A", "--qwen", "Qwen/B"]) == 2
    assert capsys.readouterr().err == ("error: --qwen Qwen/B and --base Qwen/A give two values for the Qwen3-VL "
                                       "model; give one\n")
    assert main([*argv, "--base", "Qwen/A", "--qwen", "Qwen/A"]) == 2  # one model: the missing file is what fails
    assert "best.pt: no such file" in capsys.readouterr().err


def test_seg_index_mismatch_is_one_clear_error(backbones, tmp_path):
    from detecture.errors import CheckpointError

    qwen, sam = backbones
    write_published(tmp_path / "best.pt", qwen, sam,
                    **{EMBED: torch.zeros(qwen.seg_token_id + 3, qwen.hidden_size, dtype=torch.bfloat16),
                       LM_HEAD: torch.zeros(qwen.seg_token_id + 3, qwen.hidden_size, dtype=torch.bfloat16)})
    assert main(["convert", "published", str(tmp_path / "best.pt"), "--out", str(tmp_path / "h")]) == 0
    with pytest.raises(CheckpointError, match=f"<\\|seg\\|> id is {qwen.seg_token_id}"):
        DetecturePipeline.tiny(head=tmp_path / "h")


@pytest.mark.parametrize("option", ["--qwen", "--base"])  # --base: the older spelling, still accepted
def test_the_base_model_measures_the_embedding_shrink(backbones, tiny_model_dirs, tmp_path, capsys, option):
    """Rows made 0.97 x the base model's rows are measured as 0.97 and applied at inference."""
    from safetensors.torch import load_file

    qwen, sam = backbones
    base = load_file(str(tiny_model_dirs[0] / "model.safetensors"))
    rows = qwen.seg_token_id + 1

    def shrunk(name):
        matrix = torch.zeros(rows, qwen.hidden_size)
        n = min(rows, base[name].shape[0])
        matrix[:n] = base[name][:n] * 0.97
        return matrix.to(torch.bfloat16)

    write_published(tmp_path / "best.pt", qwen, sam, **{EMBED: shrunk("model.language_model.embed_tokens.weight"),
                                                        LM_HEAD: shrunk("lm_head.weight")})
    assert main(["convert", "published", str(tmp_path / "best.pt"), "--out", str(tmp_path / "h"),
                 option, str(tiny_model_dirs[0])]) == 0
    printed = re.search(r"shrink factor .*: ([0-9.]+)", capsys.readouterr().out)
    assert float(printed.group(1)) == pytest.approx(0.97, abs=2e-3)
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["contract"]["embedding_shrink"] == pytest.approx(0.97, abs=2e-3)


def _set(key, value):
    return lambda state: state["model_trainable"].__setitem__(key, value)


BAD = {  # name: (edit of a valid published state, what the one error line must say)
    "pickled class": (lambda s: s.__setitem__("dustbin_embed", Stranger()),
                      "holds Python objects that are not tensors (test_convert.Stranger); refused for safety"),
    "missing key": (lambda s: s["model_trainable"].pop("bridge.proj.1.bias"), "missing keys ['bridge.proj.1.bias']"),
    "extra key": (_set("bridge.proj.2.weight", torch.zeros(2)), "unknown keys ['bridge.proj.2.weight']"),
    "wrong shape": (_set("mask_head.query_mlp.2.bias", torch.zeros(5)), "mask_head.query_mlp.2.bias has shape (5,)"),
    "dustbin not a tensor": (lambda s: s.__setitem__("dustbin_embed", 5), "dustbin_embed is not a tensor (int)"),
    "key not a string": (_set(3, torch.zeros(1)), "model_trainable has a key 3 that is not a parameter name"),
    "1-D embedding": (_set(EMBED, torch.zeros(10)), f"{EMBED} has shape (10,), expected 2 dimensions"),
    "1-D head matrix": (_set("mask_head.query_mlp.0.weight", torch.zeros(8)),
                        "mask_head.query_mlp.0.weight has shape (8,), expected 2 dimensions"),
    "integer tensor": (_set("bridge.proj.0.bias", torch.zeros(4, dtype=torch.int64)),
                       "bridge.proj.0.bias holds torch.int64 values"),
    "no vocabulary rows": (lambda s: s["model_trainable"].update({EMBED: torch.zeros(0, 4),
                                                                  LM_HEAD: torch.zeros(0, 4)}),
                           "the trained <|seg|> row (their last) is missing"),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_files_give_one_clear_error(backbones, tmp_path, capsys, case):
    edit, message = BAD[case]
    path = tmp_path / "best.pt"
    state = write_published(path, *backbones)
    edit(state)
    torch.save(state, path)
    assert main(["convert", "published", str(path), "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0] and message in err[0], err
    assert not (tmp_path / "h").exists()


NOT_TORCH_ZIP = {
    "random bytes": lambda path: path.write_bytes(np.arange(100, dtype=np.uint8).tobytes()),
    "empty file": lambda path: path.write_bytes(b""),
    "legacy torch.save": lambda path: torch.save({"a": torch.zeros(1)}, path, _use_new_zipfile_serialization=False),
}


@pytest.mark.parametrize("case", NOT_TORCH_ZIP)
def test_not_a_checkpoint(tmp_path, capsys, case):
    path = tmp_path / "best.pt"
    NOT_TORCH_ZIP[case](path)
    assert main(["convert", "published", str(path), "--out", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: not a torch checkpoint" in err[0], err
    assert "weights_only" not in err[0] and "_use_new_zipfile_serialization" not in err[0]


def test_full_disk_stops_with_one_line_and_no_output(converted, tmp_path, monkeypatch, capsys):
    from safetensors import SafetensorError

    import detecture.bridge.published as published

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(published, "save_file", full)
    out = tmp_path / "head"
    assert main(["convert", "published", str(converted[0] / "best.pt"), "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "the disk is full" in err[0], err
    assert list(tmp_path.iterdir()) == []


SAM3_BAD = {  # name: (what torch.save writes, what the one error line must say)
    "a list": ([1, 2], "must map parameter names to tensors, found list"),
    "a non-string key": ({"model": {1: torch.zeros(1)}}, "has a key 1 that is not a parameter name"),
    "a non-tensor value": ({"a": 1}, "a is not a tensor (int)"),
}


@pytest.mark.parametrize("case", SAM3_BAD)
def test_sam3_checkpoint_of_another_structure_is_one_line(tmp_path, capsys, case):
    saved, message = SAM3_BAD[case]
    path, bpe = tmp_path / "sam3.pt", tmp_path / "bpe.txt.gz"
    torch.save(saved, path)
    bpe.write_bytes(gzip.compress(b"header\nt h\nth e\n"))
    assert main(["convert", "sam3", str(path), "--out", str(tmp_path / "out"), "--bpe", str(bpe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: " in err[0] and message in err[0], err


def test_sam3_bpe_whose_merges_leave_the_vocabulary_is_one_line(tmp_path, capsys):
    path, bpe = tmp_path / "sam3.pt", tmp_path / "bpe.txt.gz"
    torch.save({"a": torch.zeros(1)}, path)
    bpe.write_bytes(gzip.compress(b"header\na0 b0\n"))  # well-formed, but "a0" is no byte symbol or merge result
    assert main(["convert", "sam3", str(path), "--out", str(tmp_path / "out"), "--bpe", str(bpe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bpe}: line 2: merge 'a0 b0'" in err[0], err


def test_bench_runs_the_converted_head(converted, tmp_path, capsys):
    from bench_fixture import make_rwtd

    make_rwtd(tmp_path / "data" / "rwtd", 2)
    out = tmp_path / "out"
    assert main(["bench", "--datasets", "rwtd", "--methods", "detecture", "--tiny", "--head",
                 str(converted[0] / "head"), "--data-root", str(tmp_path / "data"), "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "cells" / "rwtd" / "detecture" / "samples.jsonl").open()]
    assert len(records) == 2 and all(r["status"] == "ok" and r["k_pred"] == 2 for r in records)
