"""Training losses, schedule, checkpoint files, config, augmentation and dataset scanning (no backbones needed)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from detecture.errors import CheckpointError
from detecture.training.config import AugmentConfig, Config, load_config
from detecture.training.losses import lm_loss, mask_loss, shifted_zero_weights
from detecture.training.schedule import LRSchedule

SEG, PAD = 9, 0


def w_of(d: float, alpha: float = 2.0) -> float:
    return 1.0 - math.exp(-alpha * d)


def test_shifted_zero_weights_hand_built_sequence():
    # positions: 0..3 prompt (one SEG inside the prompt, ignored), assistant starts at 4
    #   4  5  6  7(SEG) 8  9  10 11(SEG, last position: no seg+1 to zero)
    ids = torch.tensor([[1, SEG, 2, 3, 5, 6, 7, SEG, 4, 5, 6, SEG]])
    w = shifted_zero_weights(ids, SEG, torch.tensor([4]), alpha=2.0)[0]
    assert torch.all(w[:4] == 0)  # prompt tokens (incl. its SEG) carry no LM weight
    assert w[7] == 1 and w[11] == 1  # w[seg] = 1, also for the SEG at the very end
    assert w[8] == 0  # w[seg + 1] = 0
    expected = {4: w_of(3), 5: w_of(2), 6: w_of(1), 9: w_of(2), 10: w_of(1)}  # distance to the nearest SEG
    for pos, value in expected.items():
        assert w[pos].item() == pytest.approx(value, rel=1e-6)


def test_shifted_zero_ignores_padding_and_rows_without_seg():
    ids = torch.tensor([[1, 2, 5, SEG, PAD, PAD], [1, 2, 5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    w = shifted_zero_weights(ids, SEG, torch.tensor([2, 2]), mask, alpha=1.0)
    assert torch.all(w[0, 4:] == 0)  # padding; also no seg+1 inside the valid part
    assert w[0, 3] == 1
    assert torch.all(w[1, 2:] == 1)  # no SEG: d = inf → weight 1


def test_alpha_is_configurable():
    ids = torch.tensor([[5, 6, SEG]])
    w1 = shifted_zero_weights(ids, SEG, torch.tensor([0]), alpha=1.0)[0, 0]
    w4 = shifted_zero_weights(ids, SEG, torch.tensor([0]), alpha=4.0)[0, 0]
    assert w1.item() == pytest.approx(w_of(2, 1.0)) and w4.item() == pytest.approx(w_of(2, 4.0))


def test_off_by_one_gives_no_seg_emission_gradient_shifted_zero_does():
    """The logit that makes generation emit SEG is the SEG column at the position *before* SEG."""
    ids = torch.tensor([[1, 5, 6, 7, SEG, 3, 5, 6, SEG]])
    vocab = 12
    torch.manual_seed(0)
    base = torch.randn(1, ids.shape[1], vocab)
    good = shifted_zero_weights(ids, SEG, torch.tensor([1]))
    off_by_one = good.clone()
    off_by_one[ids == SEG] = 0.0  # the classic bug: w[seg] = 0
    grads = {}
    for name, weights in (("shifted_zero", good), ("off_by_one", off_by_one)):
        logits = base.clone().requires_grad_(True)
        lm_loss(logits, ids, weights).backward()
        grads[name] = logits.grad
    seg_positions = (ids[0] == SEG).nonzero().flatten()
    for pos in seg_positions:
        assert grads["off_by_one"][0, pos - 1].abs().sum() == 0  # no learning signal to emit SEG at all
        assert grads["shifted_zero"][0, pos - 1, SEG] < 0  # gradient descent raises the SEG logit
        assert grads["shifted_zero"][0, pos].abs().sum() == 0  # w[seg+1] = 0: SEG's own state is left to the masks


def test_lm_loss_all_zero_weights_is_zero_not_nan():
    logits = torch.randn(1, 4, 8, requires_grad=True)
    loss = lm_loss(logits, torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def _masks(size: int = 16) -> torch.Tensor:
    m = torch.zeros(3, size, size, dtype=torch.bool)
    m[0, :, : size // 3] = True
    m[1, :, size // 3 : 2 * size // 3] = True
    m[2, :, 2 * size // 3 :] = True
    return m


def test_mask_loss_hungarian_matching_is_order_free():
    gt = _masks()
    live = torch.tensor([[True, True, True, True, False, False, False]])
    logits = torch.full((1, 7, 16, 16), -10.0)
    perm = [2, 0, 1]  # slot k+1 predicts GT region perm[k]
    for k, region in enumerate(perm):
        logits[0, k + 1][gt[region]] = 10.0
    ce, dice, targets = mask_loss(logits, live, [gt])
    assert sorted(targets.matches[0]) == sorted((k + 1, r) for k, r in enumerate(perm))
    assert ce.item() < 1e-3 and dice.item() < 1e-2
    wrong = logits.clone()
    wrong[0, 1:4] = logits[0, [2, 3, 1]]  # a different assignment: matching follows it, loss stays ~0
    ce2, dice2, _ = mask_loss(wrong, live, [gt])
    assert ce2.item() < 1e-3 and dice2.item() < 1e-2


def test_mask_loss_dead_slots_and_dustbin():
    gt = _masks()[:1]  # one region; the rest of the image is uncovered → dustbin target
    live = torch.tensor([[True, True, False, False, False, False, False]])
    logits = torch.zeros(1, 7, 16, 16)
    logits[0, 2:] = 100.0  # dead slots must not win even with huge logits
    logits[0, 1][gt[0]] = 10.0
    logits[0, 0][~gt[0]] = 10.0
    ce, dice, targets = mask_loss(logits, live, [gt], ce_weight=1.0, dice_weight=3.0)
    assert targets.labels[0][~gt[0]].eq(0).all() and targets.labels[0][gt[0]].eq(1).all()
    assert ce.item() < 1e-3 and dice.item() < 1e-2
    ce3, dice3, _ = mask_loss(torch.zeros(1, 7, 16, 16), live, [gt], ce_weight=2.0, dice_weight=0.0)
    assert dice3.item() == 0 and ce3.item() == pytest.approx(2 * math.log(2), rel=1e-5)


def _schedule(**kw) -> LRSchedule:
    args = dict(lr=1e-4, min_lr=1e-6, epochs=20, warmup_epochs=5, stage1_epochs=8, steps_per_epoch=10,
                stage1_scales={"head": 1.0, "lora": 0.0, "seg_rows": 0.0},
                stage2_scales={"head": 0.1, "lora": 0.01, "seg_rows": 0.1})
    args.update(kw)
    return LRSchedule(**args)


def test_schedule_warmup_cosine_and_stages():
    s = _schedule()
    assert s.lr_at("head", 0) == pytest.approx(1e-4 / 50)
    assert s.lr_at("head", 49) == pytest.approx(1e-4)  # end of the 5 warm-up epochs
    assert s.lr_at("head", 60) < s.lr_at("head", 50)  # cosine decays
    assert s.lr_at("lora", 79) == 0 and s.lr_at("seg_rows", 79) == 0  # stage 1: frozen
    assert s.lr_at("lora", 80) > 0 and s.lr_at("head", 80) < 0.11 * s.lr_at("head", 79)  # stage 2 from epoch 9
    assert s.lr_at("head", 199) == pytest.approx(1e-6, rel=1e-2)  # cosine to min_lr
    # LoRA's peak is 1e-6 = min_lr; a smaller-peak group is never lifted to the global floor
    low = _schedule(stage2_scales={"head": 0.1, "lora": 0.001, "seg_rows": 0.1})
    assert all(low.lr_at("lora", t) <= 1e-7 + 1e-15 for t in range(80, 200))


def test_micro_warmup_restart_scales_peaks_and_clamps_min_per_group():
    s = _schedule().with_restart(step=200, lr_scale=0.15, warmup_epochs=2, epochs=30)
    assert s.lr_at("head", 200) == pytest.approx(1e-5 * 0.15 / 20)  # warm-up restarts from ~0
    assert s.lr_at("head", 219) == pytest.approx(1e-5 * 0.15)  # peak: stage-2 head peak × 0.15
    assert s.lr_at("lora", 219) == pytest.approx(1e-6 * 0.15)
    # each group's floor is clamped to its own (scaled) peak: LoRA's 1.5e-7 peak never rises to min_lr = 1e-6
    assert max(s.lr_at("lora", t) for t in range(219, 300)) == pytest.approx(1.5e-7)
    assert s.lr_at("head", 299) == pytest.approx(1e-6, rel=1e-2)
    restored = LRSchedule.from_state_dict(s.state_dict())
    assert restored == s


@pytest.mark.parametrize("steps_per_epoch", [3, 5, 7])
@pytest.mark.parametrize("warmup_epochs", [0.1, 0.3, 0.5, 1.5, 2.7])
def test_a_fractional_warmup_never_exceeds_the_peak(warmup_epochs, steps_per_epoch):
    """Linear warm-up to the peak, then cosine below it: no step's lr is above the peak, for a warm-up of any
    length in steps, at the start and after a restart."""
    s = _schedule(epochs=8, stage1_epochs=4, warmup_epochs=warmup_epochs, steps_per_epoch=steps_per_epoch)
    lrs = [s.lr_at("head", t) for t in range(4 * steps_per_epoch)]  # stage 1: the head's peak is lr
    assert max(lrs) <= 1e-4 * (1 + 1e-12) and max(lrs) == pytest.approx(1e-4)  # the peak is reached, not passed
    ramp = lrs[: math.ceil(warmup_epochs * steps_per_epoch)]
    assert ramp == sorted(ramp)
    r = s.with_restart(step=4 * steps_per_epoch, lr_scale=0.15, warmup_epochs=warmup_epochs, epochs=8)
    peak = 1e-4 * 0.1 * 0.15  # stage-2 head peak × lr_scale
    after = [r.lr_at("head", t) for t in range(4 * steps_per_epoch, 8 * steps_per_epoch)]
    assert max(after) <= peak * (1 + 1e-12) and max(after) == pytest.approx(peak)


def test_optimizer_and_rng_checkpoint_roundtrip(tmp_path):
    from detecture.training import checkpoint as ckpt
    from detecture.training.sharding import optimizer_state, trainable_state

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW([{"name": "head", "params": list(module.parameters())}], lr=0.1)
    for _ in range(3):
        module(torch.randn(5, 4)).square().sum().backward()
        opt.step()
        opt.zero_grad()
    state = ckpt.TrainerState(epoch=1, batch_in_epoch=4, optimizer_step=3)
    ckpt.save_checkpoint(tmp_path / "ck" / "step-3", trainable_state(module), optimizer_state(module, opt), state,
                         [ckpt.capture_rng()])
    expected_draw = torch.rand(3)
    assert not list((tmp_path / "ck").glob(".*"))  # no temporary left behind

    module2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt2 = torch.optim.AdamW([{"name": "head", "params": list(module2.parameters())}], lr=0.1)
    latest = ckpt.latest_checkpoint(tmp_path / "ck")
    loaded = ckpt.load_checkpoint(latest, module2, opt2, rank=0)
    assert loaded.batch_in_epoch == 4 and loaded.optimizer_step == 3
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored to the save point
    for a, b in zip(module.parameters(), module2.parameters()):
        assert torch.equal(a, b)
        sa, sb = opt.state[a], opt2.state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert not any(p.suffix in (".pt", ".bin", ".pkl") for p in latest.iterdir())
    module3 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5))
    opt3 = torch.optim.AdamW([{"name": "head", "params": list(module3.parameters())}], lr=0.1)
    with pytest.raises(CheckpointError, match=r"step-3.*1\.weight has shape \(2, 3\), model \(5, 3\)"):
        ckpt.load_checkpoint(latest, module3, opt3, rank=0)
    opt4 = torch.optim.AdamW([{"name": "bridge", "params": list(module2.parameters())}], lr=0.1)
    with pytest.raises(CheckpointError, match="optimizer parameter groups"):
        ckpt.load_checkpoint(latest, module2, opt4, rank=0)
    state_file = latest / "trainer_state.json"
    for text, problem in (("[]", "expected a mapping at the top level, got list"),
                          ('{"bogus": 1}', "bogus: unknown key"),
                          ('{"epoch": "one"}', "epoch: expected an integer")):
        state_file.write_text(text)  # a corrupt state is the checkpoint's fault, named like its other files
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(state_file))}: {re.escape(problem)}"):
            ckpt.load_checkpoint(latest, module2, opt2, rank=0)


def test_a_damaged_checkpoint_file_or_pointer_is_one_error_naming_it(tmp_path):
    """Bytes that are not UTF-8, JSON of the wrong shape, and a ``latest.json`` leading outside its folder are the
    checkpoint's fault: one :class:`CheckpointError` that names the file, never a traceback or a resume elsewhere."""
    from detecture.training import checkpoint as ckpt
    from detecture.training.sharding import optimizer_state, trainable_state

    module = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"name": "head", "params": list(module.parameters())}], lr=0.1)
    folder = tmp_path / "ck" / "step-1"
    ckpt.save_checkpoint(folder, trainable_state(module), optimizer_state(module, opt),
                         ckpt.TrainerState(optimizer_step=1), [ckpt.capture_rng()])
    pointer = tmp_path / "ck" / "latest.json"
    (tmp_path / "elsewhere").mkdir()
    for text, problem in (('{"checkpoint": "../elsewhere"}', "'checkpoint' must name a checkpoint folder beside it"),
                          ('{"checkpoint": 7}', "'checkpoint' must name a checkpoint folder beside it"),
                          ('["step-1"]', "expected a mapping at the top level, got list"),
                          ("{", "malformed checkpoint file")):
        pointer.write_text(text)
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(pointer))}: {re.escape(problem)}"):
            ckpt.latest_checkpoint(tmp_path / "ck")
    for name, data in (("rng.json", b"\xff\xfe{}"), ("optimizer.json", b"[1, 2]")):
        original = (folder / name).read_bytes()
        (folder / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(folder / name))}: "):
            ckpt.load_checkpoint(folder, module, opt, rank=0)
        (folder / name).write_bytes(original)
    ckpt.load_checkpoint(folder, module, opt, rank=0)  # the restored files load


def test_optimizer_state_of_untrained_parameters_stays_absent():
    """Stage 1 trains only the head: a checkpoint must not give LoRA / SEG rows AdamW state (step 1, zero moments),
    which would change their first stage-2 update after a resume."""
    from detecture.training.sharding import load_optimizer_state, optimizer_state

    def build():
        module = torch.nn.ModuleDict({"head": torch.nn.Linear(3, 3), "lora": torch.nn.Linear(3, 2)})
        opt = torch.optim.AdamW([{"name": "head", "params": list(module["head"].parameters())},
                                 {"name": "lora", "params": list(module["lora"].parameters())}], lr=0.1)
        return module, opt

    module, opt = build()
    assert optimizer_state(module, opt)["state"] == {} and not opt.state  # saving a fresh optimizer creates nothing
    module["head"](torch.randn(2, 3)).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    saved = optimizer_state(module, opt)
    assert sorted(saved["state"]) == ["head.bias", "head.weight"]
    assert not any(opt.state.get(p) for p in module["lora"].parameters())
    module2, opt2 = build()
    load_optimizer_state(module2, opt2, saved, "ck")
    assert not any(opt2.state.get(p) for p in module2["lora"].parameters())
    for a, b in zip(module["head"].parameters(), module2["head"].parameters()):
        assert torch.equal(opt.state[a]["exp_avg_sq"], opt2.state[b]["exp_avg_sq"])
        assert torch.equal(opt.state[a]["step"], opt2.state[b]["step"])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from detecture.training import checkpoint as ckpt
    from detecture.training.sharding import optimizer_state, trainable_state

    module = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"name": "head", "params": list(module.parameters())}])
    ckpt.save_checkpoint(tmp_path / "step-1", trainable_state(module), optimizer_state(module, opt),
                         ckpt.TrainerState(optimizer_step=1), [ckpt.capture_rng()])
    before = sorted(p.name for p in (tmp_path / "step-1").iterdir())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.atomic, "write_json", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path / "step-1", trainable_state(module), optimizer_state(module, opt),
                             ckpt.TrainerState(optimizer_step=2), [ckpt.capture_rng()])
    assert sorted(p.name for p in (tmp_path / "step-1").iterdir()) == before
    assert ckpt.latest_checkpoint(tmp_path).name == "step-1"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_config_file_loads_and_rejects_unknown_keys(tmp_path):
    from pathlib import Path

    from detecture.errors import InputError

    repo_cfg = load_config(Path(__file__).parents[1] / "configs" / "train.yaml")
    assert repo_cfg.to_dict() == Config().to_dict()  # the shipped YAML spells out the defaults
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr_scale: 3\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*optim\.lr_scale"):
        load_config(bad)
    with pytest.raises(InputError, match="stage1_epochs"):
        load_config(None, {"optim.stage1_epochs": 50})


def test_augmentation_moves_image_and_masks_together():
    from detecture.training.augment import augment, sample_rng

    size = 48
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([xx < 20, (xx >= 20) & (yy < 30), (xx >= 20) & (yy >= 30)])
    image = np.zeros((size, size, 3), np.uint8)
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        image[masks[k]] = colour
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, scale_crop=(0.5, 0.9), scale_crop_prob=1.0, color_jitter=0.0)
    changed = 0
    for seed in range(12):
        img, m, _ = augment(image, masks, cfg, sample_rng(seed, 0, 0))
        assert img.shape[:2] == m.shape[1:]
        for k in range(3):
            assert (img[m[k]].argmax(axis=1) == k).all()  # every mask pixel still shows its region's colour
        changed += img.shape[0] != size
    assert changed > 0
    a, _, _ = augment(image, masks, cfg, sample_rng(3, 1, 7))
    b, _, _ = augment(image, masks, cfg, sample_rng(3, 1, 7))
    assert np.array_equal(a, b)  # deterministic per (seed, epoch, index)


def test_dataset_skips_bad_samples_with_counts(tmp_path, caplog):
    from train_fixture import write_mosaics

    from detecture.training.config import DataConfig
    from detecture.training.dataset import EpochSampler, TextureDataset

    root = write_mosaics(tmp_path / "d", n=4, size=32, bad=True)
    with caplog.at_level("WARNING"):
        ds = TextureDataset(root, DataConfig(), seed=0)
    assert len(ds) == 4
    assert dict(ds.report.skipped) == {"missing file": 1, "size mismatch": 1, "empty mask": 1,
                                       "too many regions": 1}
    assert "nope.png" in caplog.text and "small.png" in caplog.text
    item = ds[0]
    assert len(item.descriptions) == item.masks.shape[0] and item.masks.any(axis=(1, 2)).all()
    regimes = {ds.item(i, e).regime.kind for i in range(4) for e in range(6)}
    assert regimes == {"oracle", "autonomous"}  # both count phrasings are trained
    orders = {tuple(ds.item(2, e).descriptions) for e in range(8)}
    assert len(orders) > 1  # region order is shuffled
    ranks = [EpochSampler(5, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3 and set(ranks[0].indices()) | set(ranks[1].indices()) == set(range(5))


def test_unsupported_launches_are_refused_with_a_clear_message():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from detecture.errors import DetectureError
    from detecture.training.factory import check_launch

    def launch(kind, fsdp_version=2):
        return SimpleNamespace(distributed_type=kind, fsdp_plugin=SimpleNamespace(fsdp_version=fsdp_version))

    with pytest.raises(DetectureError, match="DeepSpeed.*ddp.yaml.*fsdp.yaml"):
        check_launch(launch(DistributedType.DEEPSPEED), None)
    with pytest.raises(DetectureError, match="fsdp_version: 2"):
        check_launch(launch(DistributedType.FSDP, fsdp_version=1), None)
    with pytest.raises(DetectureError, match="4bit cannot be combined with FSDP"):
        check_launch(launch(DistributedType.FSDP), "4bit")
    check_launch(launch(DistributedType.FSDP), None)
    check_launch(launch(DistributedType.MULTI_GPU), "4bit")
    check_launch(launch(DistributedType.NO), None)


def test_pruning_killed_midway_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    """A kill during deletion must not leave a half-deleted ``step-*`` that looks like a real checkpoint."""
    from detecture.training import checkpoint as ckpt
    from detecture.training.sharding import optimizer_state, trainable_state

    module = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"name": "head", "params": list(module.parameters())}])
    for step in range(1, 4):
        ckpt.save_checkpoint(tmp_path / f"step-{step}", trainable_state(module), optimizer_state(module, opt),
                             ckpt.TrainerState(optimizer_step=step), [ckpt.capture_rng()])

    def killed(path, *args, **kwargs):
        (Path(path) / "trainer_state.json").unlink()  # part of the folder is gone when the process dies
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ckpt.shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-2", "step-3"]
    ckpt.prune_checkpoints(tmp_path, keep=2)  # the next prune clears the leftover
    assert not list(tmp_path.glob(".step-*"))
    ckpt.prune_checkpoints(tmp_path, keep=0)  # room for a new checkpoint: only the latest stays
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-3"]
