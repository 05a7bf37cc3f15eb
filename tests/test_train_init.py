"""``detecture train --init HEAD``: fine-tuning starts from a converted head + adapter, under that head's contract,
and the exported head carries the contract it was trained under."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from published_fixture import Q, write_published
from train_fixture import write_mosaics

from detecture.backbones import TINY_NAME
from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.bridge.contract import published_contract
from detecture.bridge.head import DetectureHead, default_qwen, read_head_config
from detecture.bridge.published import convert
from detecture.errors import CheckpointError, InputError
from detecture.training.config import load_config
from detecture.training.loop import ResumeOptions, Trainer

FAST = {"model.tiny": True, "train.eval_every_epochs": 0, "train.emission_every_steps": 0, "optim.epochs": 1,
        "optim.stage1_epochs": 0, "optim.grad_accum": 1, "optim.batch_size": 3}


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    state = write_published(root / "best.pt", QwenVL.tiny(0), Sam3Backbone.tiny(0))
    convert(root / "best.pt", root / "head")
    return root / "head", state["model_trainable"]


def test_training_starts_from_the_converted_weights_under_their_contract(head_dir, tmp_path):
    head, tensors = head_dir
    data = write_mosaics(tmp_path / "data", n=3, size=64)
    trainer = Trainer.from_config(load_config(None, FAST), data, tmp_path / "run", init=head)
    start = DetectureHead.from_pretrained(head)
    for name, tensor in start.state_dict().items():
        assert torch.equal(trainer.head.state_dict()[name], tensor), name
    qwen = trainer.qwen
    assert qwen.prompts.name == "published-neurips2026" and qwen.image_policy.mode == "square"
    seg = torch.tensor([[qwen.seg_token_id]])
    assert torch.equal(qwen.model.get_input_embeddings()(seg)[0, 0], tensors[f"{Q}embed_tokens.weight"][-1].float())
    lora = dict(qwen.model.named_parameters())
    key = "base_model.model.model.language_model.layers.1.self_attn.v_proj.lora_B.default.weight"
    assert torch.equal(lora[key], tensors[f"{Q}layers.1.self_attn.v_proj.lora_B.default.weight"].float())
    result = trainer.run()
    assert DetectureHead.from_pretrained(result.final_dir).config.contract == published_contract()
    with pytest.raises(CheckpointError, match="same --init"):  # resuming must keep the contract
        Trainer.from_config(load_config(None, FAST), data, tmp_path / "run").run(ResumeOptions(True, None, None))
    (tmp_path / "run" / "contract.json").write_bytes(b"\xff{")  # damaged: one error naming it, not a traceback
    with pytest.raises(CheckpointError, match=r"contract\.json: malformed run contract"):
        Trainer.from_config(load_config(None, FAST), data, tmp_path / "run").run(ResumeOptions(True, None, None))


def test_sam3_runs_at_the_contracts_epsilon_from_the_first_step_and_validation_keeps_it(head_dir, tmp_path):
    """The --init head's ViT epsilon (Meta's 1e-5; the tiny SAM3 loads with 1e-6) is applied when the run is built,
    which every rank does: each SAM3 forward runs at it, training's first as those after a validation, whose
    pipeline changes nothing and leaves the head training."""
    data = write_mosaics(tmp_path / "data", n=2, size=64)
    cfg = load_config(None, {**FAST, "optim.stage1_epochs": 1, "optim.batch_size": 1, "train.emission_every_steps": 1,
                             "train.emission_check_samples": 1, "train.max_new_tokens": 2})
    trainer = Trainer.from_config(cfg, data, tmp_path / "run", val_data=data, init=head_dir[0])
    norm = next(m for m in trainer.sam.model.vision_encoder.backbone.modules() if isinstance(m, torch.nn.LayerNorm))
    seen = []  # (eps, head training) at every ViT forward: training's steps, then each validation
    norm.register_forward_pre_hook(lambda module, args: seen.append((module.eps, trainer.head.training)))
    trainer.run()
    assert [training for _, training in seen] == [True, False, False, True, False, False]
    assert {eps for eps, _ in seen} == {1e-5}


def test_a_head_fine_tuned_from_init_records_the_backbones_of_this_run(head_dir, tmp_path):
    """A head fine-tuned from --init is fitted to this run's backbones: it records their names (the Qwen inference
    loads when none is named) and the Qwen's quantization (full precision here), not those of the init head."""
    init = tmp_path / "init"
    shutil.copytree(head_dir[0], init)
    config = json.loads((init / "config.json").read_text())
    (init / "config.json").write_text(json.dumps({**config, "qwen_quantization": "4bit", "qwen_model": "other/qwen",
                                                  "sam3_model": "other/sam3"}))
    data = write_mosaics(tmp_path / "data", n=3, size=64)
    trainer = Trainer.from_config(load_config(None, FAST), data, tmp_path / "run", init=init)
    recorded = trainer.head.config
    assert (recorded.qwen_model, recorded.sam3_model, recorded.qwen_quantization) == (TINY_NAME, TINY_NAME, None)
    with pytest.raises(InputError, match="add --tiny"):  # inference asks for the tiny Qwen, not other/qwen
        default_qwen(recorded)


def test_an_init_head_of_other_sam3_widths_is_refused_in_one_line_before_training(head_dir, tmp_path, capsys):
    """A head whose Bridge writes another SAM3 text width cannot train on this SAM3: one line naming the head and
    the widths, before any step (not a shape error at the first)."""
    from detecture.cli import main

    config = read_head_config(head_dir[0])
    wide = tmp_path / "wide"
    DetectureHead(replace(config, sam_text_hidden_size=config.sam_text_hidden_size + 8)).save_pretrained(wide)
    data = write_mosaics(tmp_path / "data", n=3, size=64)
    assert main(["train", "--tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--init", str(wide)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {wide}: head was trained for a SAM3 with sam_text_hidden_size "
                          f"{config.sam_text_hidden_size + 8} ") and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "train_log.csv").exists()


def test_init_with_another_lora_rank_is_one_clear_error(head_dir, tmp_path):
    data = write_mosaics(tmp_path / "data", n=3, size=64)
    with pytest.raises(CheckpointError, match="--set lora.r=8"):
        Trainer.from_config(load_config(None, {**FAST, "lora.r": 4}), data, tmp_path / "run", init=head_dir[0])


def test_feature_cache_of_another_contract_is_not_reused(head_dir, tmp_path):
    """Cached SEG states depend on the prompts, positions, Qwen image and adapter: a run under another --init must
    rebuild the stage-1 cache, not read one built under a different contract."""
    head, _ = head_dir
    data = write_mosaics(tmp_path / "data", n=3, size=64)
    cfg = load_config(None, {**FAST, "cache.enabled": True})
    plain = Trainer.from_config(cfg, data, tmp_path / "plain")
    converted = Trainer.from_config(cfg, data, tmp_path / "converted", init=head)
    assert plain.cache.key != converted.cache.key
    plain.cache.dir.mkdir(parents=True, exist_ok=True)
    (plain.cache.dir / "complete.json").write_text(f'["{plain.cache.key}"]')  # a damaged marker: built again
    assert not plain.cache.is_complete()


def test_feature_cache_of_another_head_written_at_the_same_init_path_is_not_reused(head_dir, tmp_path):
    """The cached SEG states come from the --init head's adapter: a head folder rewritten in place (a re-exported
    runs/a/final, say) must change the cache's key, for its adapter as for its head weights."""
    from safetensors.torch import load_file, save_file

    from detecture.training.dataset import TextureDataset
    from detecture.training.factory import run_contract
    from detecture.training.feature_cache import fingerprint

    init = tmp_path / "init"
    shutil.copytree(head_dir[0], init)
    cfg = load_config(None, {**FAST, "cache.enabled": True})
    dataset = TextureDataset(write_mosaics(tmp_path / "data", n=3, size=64), cfg.data, cfg.train.seed)
    head = DetectureHead.from_pretrained(init)
    keys = [fingerprint(cfg, dataset, run_contract(head, init))]
    assert fingerprint(cfg, dataset, run_contract(head, init)) == keys[0]  # the same files: the same key
    for weights in (init / "adapter" / "adapter_model.safetensors", init / "model.safetensors"):
        tensors = load_file(str(weights))
        name = sorted(tensors)[0]
        save_file({**tensors, name: tensors[name] + 1}, str(weights))  # another head, same path and file size
        keys.append(fingerprint(cfg, dataset, run_contract(DetectureHead.from_pretrained(init), init)))
    assert len(set(keys)) == 3, keys


def test_a_feature_cache_an_older_version_built_is_not_reused(tmp_path, monkeypatch):
    """What a cached view holds changes with the code (flipped views' descriptions are mirrored now): a cache keyed
    under another format, in a shared cache.dir say, must be rebuilt."""
    from detecture.training import feature_cache

    data = write_mosaics(tmp_path / "data", n=3, size=64)
    cfg = load_config(None, {**FAST, "cache.enabled": True})
    dataset = Trainer.from_config(cfg, data, tmp_path / "run").dataset
    current = feature_cache.fingerprint(cfg, dataset)
    monkeypatch.setattr(feature_cache, "CACHE_FORMAT", feature_cache.CACHE_FORMAT - 1)
    assert feature_cache.fingerprint(cfg, dataset) != current


def test_a_bad_init_head_stops_the_command_before_anything_is_written(head_dir, tmp_path, capsys):
    """The head's config is checked before the backbones load and before --out is made, so a re-run into the same
    --out starts clean."""
    import json

    from detecture.cli import main

    bad = tmp_path / "bad"
    shutil.copytree(head_dir[0], bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "num_slots": -1}))
    out = tmp_path / "run"
    assert main(["train", "--tiny", "--data", str(tmp_path), "--out", str(out), "--init", str(bad)]) == 2
    assert capsys.readouterr().err == f"error: {bad / 'config.json'}: num_slots: expected at least 2, got -1\n"
    assert not out.exists()


def test_an_init_head_with_too_few_slots_for_the_regions_a_sample_may_have_is_refused_before_training(head_dir,
                                                                                                     tmp_path, capsys):
    """An --init head keeps its own slots: with room for 3 regions and samples of up to 6 (data.max_regions), the
    first sample with 4 would stop the run; refused before --out is made (and by build_parts, for the API)."""
    from detecture.cli import main

    few = tmp_path / "few"
    shutil.copytree(head_dir[0], few)
    config = json.loads((few / "config.json").read_text())
    (few / "config.json").write_text(json.dumps({**config, "num_slots": 4}))
    expected = (f"{few}: the head has num_slots 4, room for 3 regions beside the dustbin, fewer than data.max_regions "
                "(6) a training sample may have; train it with --set data.max_regions=3")
    out = tmp_path / "run"
    assert main(["train", "--tiny", "--data", str(tmp_path), "--out", str(out), "--init", str(few)]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"
    assert not out.exists()
    with pytest.raises(InputError) as info:
        Trainer.from_config(load_config(None, FAST), write_mosaics(tmp_path / "data", n=3, size=64), out, init=few)
    assert str(info.value) == expected
