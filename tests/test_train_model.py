"""The trainable surface on tiny backbones: where gradients go, what a step changes, and the one-pass forward."""

from __future__ import annotations

import pytest
import torch

from detecture.backbones.qwen import QwenVL
from detecture.backbones.sam3 import Sam3Backbone
from detecture.bridge.contract import InferenceContract
from detecture.bridge.head import DetectureHead, HeadConfig
from detecture.images import resize_linear
from detecture.reencode import suffix_hidden_states
from detecture.training.batching import make_batch
from detecture.training.config import Config, DataConfig
from detecture.training.dataset import TextureDataset
from detecture.training.model import TrainModule, teacher_forced_pass
from detecture.training.schedule import LRSchedule
from detecture.training.trainable import apply_lora, build_optimizer, group_of, param_groups, parameter_table


def build(tie: bool = False, dropout: float = 0.4):
    cfg = Config()
    qwen, sam = QwenVL.tiny(0), Sam3Backbone.tiny(0)
    if tie:  # emulate Qwen3-VL 2B/4B, whose lm_head shares the embedding matrix
        qwen.model.lm_head.weight = qwen.model.get_input_embeddings().weight
        qwen.model.config.tie_word_embeddings = True
    apply_lora(qwen, cfg.lora)
    torch.manual_seed(0)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, bridge_dropout=dropout))
    module = TrainModule(qwen, sam, head, cfg.loss)
    groups = param_groups(module, cfg.optim.weight_decay)
    return cfg, qwen, module, groups


@pytest.fixture(scope="module")
def mosaic_items(tmp_path_factory):
    from train_fixture import write_mosaics

    root = write_mosaics(tmp_path_factory.mktemp("mosaics"), n=2, size=64)
    ds = TextureDataset(root, DataConfig(), seed=0)
    return [ds.item(i, epoch=0) for i in range(2)]


def effective_rows(qwen) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedding and lm_head matrices as the forward pass uses them (base weight with PEFT rows written in)."""
    emb = qwen.model.get_input_embeddings()
    out = qwen.model.get_output_embeddings()
    active = ["default"]
    return emb.token_adapter.get_merged_weights(active).detach().clone(), \
        out.token_adapter.get_merged_weights(active).detach().clone() if hasattr(out, "token_adapter") \
        else out.weight.detach().clone()


def test_teacher_forced_pass_matches_reencode_and_causal_lm(mosaic_items):
    _, qwen, module, _ = build()
    batch = make_batch(mosaic_items, module)
    inputs = batch.qwen_inputs
    with torch.no_grad():
        logits, hidden = teacher_forced_pass(qwen, inputs)
        reference = suffix_hidden_states(qwen, inputs, decoupled=True, use_cache=True)
        causal = qwen.model(**{k: v for k, v in inputs.items() if k != "prefix_length"}).logits
    p = int(inputs["prefix_length"])
    valid = inputs["attention_mask"][:, p:].bool()
    torch.testing.assert_close(hidden[valid], reference[valid], atol=1e-5, rtol=1e-4)
    valid_lm = inputs["attention_mask"][:, p - 1 :].bool()
    torch.testing.assert_close(logits[valid_lm], causal[:, p - 1 :][valid_lm], atol=1e-5, rtol=1e-4)


def test_a_shared_resize_contract_feeds_both_models_its_square_image_in_training(tmp_path):
    """Under ``image_resize: shared_linear`` (the published head's) a training batch feeds Qwen and SAM3 the one
    INTER_LINEAR square inference feeds them, not each model its own resize of the 96 px original."""
    from train_fixture import write_mosaics

    item = TextureDataset(write_mosaics(tmp_path, n=1, size=96), DataConfig(), seed=0, train=False).item(0, epoch=0)
    qwen, sam = QwenVL.tiny(0), Sam3Backbone.tiny(0)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, contract=InferenceContract(image_resize="shared_linear")))
    batch = make_batch([item], TrainModule(qwen, sam, head, Config().loss))
    shared = [resize_linear(item.image, sam.image_size)]
    assert torch.equal(batch.pixel_values, sam.preprocess(shared))
    assert not torch.equal(batch.pixel_values, sam.preprocess([item.image]))
    assert torch.equal(batch.qwen_inputs["pixel_values"], qwen.build_inputs(shared, [""])["pixel_values"])


@pytest.mark.parametrize("tie", [False, True])
def test_gradients_reach_only_trainable_parameters(mosaic_items, tie):
    _, qwen, module, groups = build(tie=tie)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    in_groups = [id(p) for g in groups.groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in module.parameters() if p.requires_grad)
    assert {group_of(n) for n in trainable} == {"head", "lora", "seg_rows"}
    assert not any(n.startswith("sam_model.") for n in trainable)  # SAM3 frozen
    seg_adapters = [n for n in trainable if "trainable_tokens_delta" in n]
    assert len(seg_adapters) == (1 if tie else 2)  # tied: the lm_head row follows the embedding row
    batch = make_batch(mosaic_items, module)
    module(batch, stage=2).total.backward()
    for name, p in module.named_parameters():
        if name in trainable:
            assert p.grad is not None, name
            if "lora_A" not in name:  # LoRA B starts at 0, so A's first gradient is exactly 0 by design
                assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    print(parameter_table(groups, Config().optim, frozen=0))


def test_stage1_trains_the_head_only(mosaic_items):
    _, qwen, module, _ = build()
    module(make_batch(mosaic_items, module), stage=1).total.backward()
    for name, p in module.named_parameters():
        if group_of(name) == "head":
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name  # LoRA, SEG rows and both backbones get nothing in stage 1


def test_a_stage2_step_changes_only_the_seg_rows_of_the_embeddings(mosaic_items):
    cfg, qwen, module, groups = build()
    optimizer = build_optimizer(groups, cfg.optim)
    LRSchedule.from_config(cfg.optim, 1).apply(optimizer, 8)  # first stage-2 step
    seg = qwen.seg_token_id
    emb0, out0 = effective_rows(qwen)
    base0 = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    module(make_batch(mosaic_items, module), stage=2).total.backward()
    optimizer.step()
    emb1, out1 = effective_rows(qwen)
    for before, after in ((emb0, emb1), (out0, out1)):
        changed = (before != after).any(dim=1).nonzero().flatten().tolist()
        assert changed == [seg]
    for n, p in module.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base0[n]), n  # frozen base weights (incl. full embedding matrices) untouched


def test_seg_rows_are_warm_started_from_im_end():
    _, qwen, _, _ = build()
    emb, out = effective_rows(qwen)
    end = qwen.end_token_id
    assert torch.equal(emb[qwen.seg_token_id], emb[end]) and torch.equal(out[qwen.seg_token_id], out[end])
