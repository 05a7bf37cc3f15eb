"""End-to-end training runs on tiny backbones and real-texture mosaics: overfitting, exact kill-and-resume,
2-process DDP (gloo), the stage-1 feature cache, and the NaN guard."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from train_fixture import write_mosaics

from detecture.cli import main
from detecture.training.config import Config, LossConfig, load_config
from detecture.training.loop import (
    Accumulation,
    NonFiniteLossError,
    ResumeOptions,
    Trainer,
    accumulation_samples,
    changed_on_resume,
)
from detecture.training.losses import LossTerms, lm_loss, mask_loss, total_loss

TESTS = Path(__file__).parent
FAST = {  # tiny backbones, no live evaluation, one checkpoint per optimizer step
    "model.tiny": True, "train.eval_every_epochs": 0, "train.emission_every_steps": 0,
    "train.save_every_steps": 1,
}


def losses(out: Path, key: str = "total") -> list[float]:
    with (out / "train_log.csv").open() as f:
        return [float(r[key]) if r[key] != "" else math.nan for r in csv.DictReader(f)]


def tensorboard_steps(out: Path, tag: str) -> list[int]:
    """The steps TensorBoard shows for ``tag``, read by its own event loader (which drops orphaned steps itself)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "detecture", "train", "--tiny", *args]


def sets(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mosaics(tmp_path_factory.mktemp("data"), n=6, size=64, bad=True)


def test_overfitting_one_batch_halves_the_loss(data):
    """Stage 1 on one fixed batch of real mosaics (features precomputed, as the stage-1 cache does)."""
    cfg = load_config(None, {**FAST, "model.head": {"bridge_dropout": 0.0}})
    trainer = Trainer.from_config(cfg, data, data.parent / "overfit")
    module = trainer.module
    from detecture.training.batching import make_batch

    batch = make_batch([trainer.dataset.item(i, epoch=0) for i in range(2)], trainer.module)
    with torch.no_grad():
        batch.seg_states = module.seg_states_frozen(batch.qwen_inputs, batch.counts)
        batch.vision = module.sam3.vision_features(batch.pixel_values)
    head_params = [p for n, p in module.named_parameters() if n.startswith("head.")]
    optimizer = torch.optim.AdamW(head_params, lr=1e-2)
    history = []
    for _ in range(60):  # at most 60 steps; stop as soon as the loss has halved
        terms = module(batch, stage=1)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        history.append(terms.total.item())
        if history[-1] <= 0.5 * history[0]:
            break
    assert history[-1] <= 0.5 * history[0], history


def seg_log_prob(trainer, batch) -> float:
    """Mean log-probability of emitting <|seg|> where the response has one (the emission the LM must learn)."""
    from detecture.training.model import teacher_forced_pass

    inputs = batch.qwen_inputs
    p = int(inputs["prefix_length"])
    with torch.no_grad():
        logits, _ = teacher_forced_pass(trainer.qwen, inputs)
    targets = inputs["input_ids"][:, p:]
    seg = trainer.qwen.seg_token_id
    logp = logits[:, :-1].log_softmax(-1)[..., seg]
    return logp[targets == seg].mean().item()


def test_stage2_lowers_the_lm_loss_and_raises_seg_emission(data):
    cfg = load_config(None, {**FAST, "model.head": {"bridge_dropout": 0.0}})
    trainer = Trainer.from_config(cfg, data, data.parent / "lm")
    from detecture.training.batching import make_batch

    batch = make_batch([trainer.dataset.item(0, epoch=0)], trainer.module)
    params = [p for n, p in trainer.module.named_parameters() if "lora_" in n or "trainable_tokens" in n]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    trainer.set_stage(2)
    before = seg_log_prob(trainer, batch)
    lm = []
    for _ in range(8):
        terms = trainer.module(batch, stage=2)
        optimizer.zero_grad()
        terms.lm.backward()
        optimizer.step()
        lm.append(terms.lm.item())
    assert lm == sorted(lm, reverse=True) and lm[-1] < 0.95 * lm[0], lm
    assert seg_log_prob(trainer, batch) > before + 0.5


# What Trainer.accumulate uses of an accelerator, for one process on the CPU.
CPU_ACCELERATOR = SimpleNamespace(device="cpu", no_sync=lambda m: contextlib.nullcontext(),
                                  autocast=contextlib.nullcontext, backward=torch.Tensor.backward)


class MeanSquaredError(torch.nn.Module):
    """A micro-batch's loss as the real ones are: a mean over its samples (of ``(w . x_i - y_i)^2`` here)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.w, self.x, self.y = torch.nn.Parameter(torch.ones(x.shape[1])), x, y

    def per_sample(self, indices: list[int]) -> torch.Tensor:
        return (self.x[indices] @ self.w - self.y[indices]) ** 2

    def forward(self, batch, stage: int) -> LossTerms:
        loss = self.per_sample(batch.ids).mean()
        return LossTerms(total=loss, mask_ce=loss, mask_dice=loss * 0, lm=loss * 0)


@pytest.mark.parametrize("n, batch_size, accum", [(5, 2, 4), (10, 3, 2), (7, 2, 2), (6, 2, 3)])
def test_an_accumulated_step_is_the_mean_gradient_over_its_samples(n, batch_size, accum):
    """However the epoch's last micro-batch and group fall short, each optimizer step's gradient is the gradient of the
    plain mean loss over the group's samples: a short micro-batch counts per sample, not as much as a full one."""
    generator = torch.Generator().manual_seed(0)
    model = MeanSquaredError(torch.randn(n, 3, generator=generator), torch.randn(n, generator=generator))
    trainer = SimpleNamespace(acc=CPU_ACCELERATOR, model=model, stage=1)
    sizes = accumulation_samples(n, batch_size, accum)
    samples = [list(range(start, min(n, start + batch_size))) for start in range(0, n, batch_size)]
    group, in_group = Accumulation(), []
    for b, ids in enumerate(samples):
        last = (b + 1) % accum == 0 or b + 1 == len(samples)
        batch = SimpleNamespace(ids=ids)
        batch.to = lambda device, batch=batch: batch
        Trainer.accumulate(trainer, batch, sizes[b], last, group)
        in_group += ids
        if last:
            [expected] = torch.autograd.grad(model.per_sample(in_group).mean(), model.w)
            torch.testing.assert_close(model.w.grad, expected)
            assert group.sums[0].item() == pytest.approx(model.per_sample(in_group).mean().item())
            model.w.grad, group, in_group = None, Accumulation(), []


class TrainingLosses(torch.nn.Module):
    """The training losses, with the published weights, on each sample's own slot logits and LM logits (parameters
    standing for the models' outputs); the samples differ in region count and in weighted tokens."""

    def __init__(self, counts: list[int], lengths: list[int], size: int = 16, vocab: int = 11) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        n, longest = len(counts), max(lengths)
        self.counts, self.cfg = torch.tensor(counts), LossConfig()
        self.slot_logits = torch.nn.Parameter(torch.randn(n, 7, size // 2, size // 2, generator=generator))
        self.lm_logits = torch.nn.Parameter(torch.randn(n, longest, vocab, generator=generator))
        self.ids = torch.randint(vocab, (n, longest), generator=generator)
        weights = torch.rand(n, longest, generator=generator)
        self.weights = weights * (torch.arange(longest) < torch.tensor(lengths)[:, None])  # padding weighs 0
        columns = torch.arange(size).expand(size, size)
        self.masks = [torch.stack([columns * k // size == region for region in range(k)]) for k in counts]

    def forward(self, batch, stage: int) -> LossTerms:
        i = batch.ids
        live = torch.arange(7) <= self.counts[i][:, None]  # the dustbin and the sample's K slots
        ce, dice, _ = mask_loss(self.slot_logits[i], live, [self.masks[j] for j in i], self.cfg.ce_weight,
                                self.cfg.dice_weight)
        return total_loss(ce, dice, lm_loss(self.lm_logits[i], self.ids[i], self.weights[i]), self.cfg.lm_weight)


def test_a_step_of_the_training_losses_does_not_depend_on_how_its_samples_are_batched():
    """The same 4 samples, of 1, 5, 2 and 3 regions and 3 to 9 weighted tokens, as batch 4 x accumulation 1, 2 x 2
    and 1 x 4: the same loss terms and gradients. Dice pooled over a micro-batch's matched regions, or the LM loss
    over its weighted tokens, would weigh a 1-region sample 1/6 beside a 5-region one and 1/2 alone."""
    model = TrainingLosses(counts=[1, 5, 2, 3], lengths=[3, 9, 5, 7])
    trainer = SimpleNamespace(acc=CPU_ACCELERATOR, model=model, stage=2)
    results = []
    for batch_size, accum in ((4, 1), (2, 2), (1, 4)):
        group = Accumulation()
        for b, start in enumerate(range(0, 4, batch_size)):
            batch = SimpleNamespace(ids=list(range(start, start + batch_size)))
            batch.to = lambda device, batch=batch: batch
            Trainer.accumulate(trainer, batch, accumulation_samples(4, batch_size, accum)[b], b + 1 == accum, group)
        results.append((group.sums, model.slot_logits.grad, model.lm_logits.grad))
        model.zero_grad(set_to_none=True)
    assert all(term > 0 for term in results[0][0])
    for sums, slot_grad, lm_grad in results[1:]:
        torch.testing.assert_close(sums, results[0][0])
        torch.testing.assert_close(slot_grad, results[0][1])
        torch.testing.assert_close(lm_grad, results[0][2])


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    """4 steps per epoch, stage 2 from epoch 2; the run is SIGKILLed in stage 2, mid-epoch, then resumed. The
    uninterrupted run and the one killed are independent processes, so they train at the same time, on one thread
    each (as the resume does, in this process: the same arithmetic in every run)."""
    data = write_mosaics(tmp_path / "data", n=4, size=64, bad=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    overrides = {**FAST, "optim.batch_size": 1, "optim.grad_accum": 1, "optim.epochs": 2, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0.5}
    full, killed = tmp_path / "full", tmp_path / "killed"
    out, err = tmp_path / "full.out", tmp_path / "full.err"  # files: a pipe left unread while polling would fill
    with out.open("w") as stdout, err.open("w") as stderr:
        uninterrupted = subprocess.Popen([sys.executable, "-X", "importtime",
                                          *cli("--data", str(data), "--out", str(full), *sets(overrides))[1:]],
                                         stdout=stdout, stderr=stderr, env=env)
    proc = subprocess.Popen(cli("--data", str(data), "--out", str(killed), *sets(overrides)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        target = killed / "checkpoints" / "step-00000006"
        deadline = time.time() + 240
        while not target.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        uninterrupted.wait(timeout=300)
    finally:
        for p in (proc, uninterrupted):
            if p.poll() is None:
                p.kill()
                p.wait()
    stdout, stderr = out.read_text(), err.read_text()
    assert uninterrupted.returncode == 0, stderr[-3000:]
    assert "bad samples skipped: 4" in stdout
    # Optional backends are imported only by runs that use them: bitsandbytes, whose import logs a warning on some
    # CPUs, never loads (-X importtime lists every module loaded; a blocked attempt shows as the bare name only).
    assert not re.search(r"\|\s*bitsandbytes\.", stderr)
    reference = losses(full)
    assert len(reference) == 8

    kept = sorted((killed / "checkpoints").glob("step-*"))
    assert len(kept) <= 3  # train.keep_checkpoints
    latest = kept[-1]
    state = json.loads((latest / "trainer_state.json").read_text())
    assert 0 < state["batch_in_epoch"] < 4 and state["epoch"] == 1  # killed in stage 2, mid-epoch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the resume runs in-process (only the kill needs a child), on one thread as they did
    try:
        assert main(cli("--data", str(data), "--out", str(killed), "--resume", *sets(overrides))[3:]) == 0
    finally:
        torch.set_num_threads(threads)
    again = losses(killed)
    assert len(again) == 8
    for a, b in zip(again, reference):
        assert abs(a - b) <= 1e-6 * max(1.0, abs(b)), (again, reference)
    for term in ("lm", "lr_lora"):
        assert losses(killed, term)[4:] == losses(full, term)[4:]
    assert tensorboard_steps(killed, "train/total") == list(range(1, 9))


@pytest.mark.slow
def test_resume_from_a_stage1_checkpoint_into_stage2_is_exact(data, tmp_path):
    """The checkpoint at the end of stage 1 holds no AdamW state for LoRA / SEG rows; stage 2 must start them fresh
    after a resume exactly as in an uninterrupted run."""
    overrides = {**FAST, "optim.batch_size": 2, "optim.grad_accum": 1, "optim.epochs": 2, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0}
    full, split = tmp_path / "full", tmp_path / "split"
    Trainer.from_config(load_config(None, overrides), data, full).run()
    # 3 steps per epoch: the split run stops after all of stage 1, then resumes
    Trainer.from_config(load_config(None, overrides), data, split, max_steps=3).run()
    Trainer.from_config(load_config(None, overrides), data, split).run(ResumeOptions(resume=True))
    assert len(losses(full)) == 6 and losses(split) == losses(full)


def test_micro_warmup_restart_on_resume(data, tmp_path):
    overrides = {**FAST, "optim.batch_size": 2, "optim.grad_accum": 1, "optim.epochs": 1, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0}
    out = tmp_path / "run"
    args = cli("--data", str(data), "--out", str(out), *sets(overrides))[3:]  # the CLI, in-process
    assert main(args) == 0
    shutil.copytree(out, tmp_path / "crashed")  # the same first run, for the crashed restart below
    assert main([*args, "--resume", "--epochs", "3", "--resume-lr-scale", "0.15", "--resume-warmup-epochs", "1"]) == 0
    lr = losses(out, "lr_head")
    assert len(lr) == 9  # 3 steps per epoch, extended from 1 to 3 epochs
    peak = 1e-4 * 0.1 * 0.15  # the added epochs are stage 2 (head × 0.1), restarted at × 0.15
    assert lr[3] == pytest.approx(peak / 3) and lr[5] == pytest.approx(peak)  # 1-epoch warm-up to the scaled peak
    assert 1e-6 <= lr[8] < lr[5]  # cosine towards the group's floor min(min_lr, peak)
    assert losses(out, "lr_lora")[5] == pytest.approx(1e-4 * 0.01 * 0.15)
    # The restart stopped after step 5 (a crash), then the same command again: it continues the restart the
    # checkpoint holds, anchored at step 3, instead of warming up again from step 5.
    crashed = cli("--data", str(data), "--out", str(tmp_path / "crashed"), *sets(overrides))[3:]
    restart = ["--resume", "--epochs", "3", "--resume-lr-scale", "0.15", "--resume-warmup-epochs", "1"]
    assert main([*crashed, *restart, "--max-steps", "5"]) == 0
    assert main([*crashed, *restart]) == 0
    for key in ("lr_head", "lr_lora", "total"):
        assert losses(tmp_path / "crashed", key) == losses(out, key), key


def test_resume_refuses_a_change_the_checkpoint_would_ignore(data, tmp_path, capsys):
    """The schedule and AdamW's settings come from the checkpoint: a changed lr or weight_decay would be ignored
    while config.json recorded it, so it is one error line, before models load. Epochs and cadences may change."""
    overrides = {**FAST, "optim.batch_size": 2, "optim.grad_accum": 1, "optim.epochs": 1, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0}
    out = tmp_path / "run"
    args = cli("--data", str(data), "--out", str(out), *sets(overrides))[3:]  # the CLI, in-process
    assert main(args) == 0
    recorded = (out / "config.json").read_text()
    capsys.readouterr()
    changed = ["--resume", "--epochs", "2", "--set", "optim.lr=5e-3", "--set", "optim.weight_decay=0.5"]
    assert main([*args, *changed]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "optim.lr (0.0001 -> 0.005)" in err and "optim.weight_decay (0.01 -> 0.5)" in err
    assert "optim.epochs" not in err and (out / "config.json").read_text() == recorded
    # a restart's warm-up defaults to optim.warmup_epochs, so it may change together with --resume-lr-scale
    allowed = ["--resume", "--epochs", "2", "--set", "train.log_every=2", "--set", "optim.warmup_epochs=1",
               "--resume-lr-scale", "0.5"]
    assert main([*args, *allowed]) == 0
    assert json.loads((out / "config.json").read_text())["optim"]["warmup_epochs"] == 1
    assert main([*args, "--resume", "--epochs", "2", "--set", "optim.warmup_epochs=1"]) == 0  # as recorded: no change


def test_resuming_a_finished_run_trains_nothing_and_says_so(data, tmp_path, capsys):
    """The same command with --resume after the run finished: no step, its final/ left as it was, and the report
    counts this run's steps, not the earlier attempt's as its own."""
    overrides = {**FAST, "optim.batch_size": 2, "optim.grad_accum": 1, "optim.epochs": 1, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0}
    out = tmp_path / "run"
    args = cli("--data", str(data), "--out", str(out), *sets(overrides))[3:]
    assert main(args) == 0
    first = capsys.readouterr().out
    steps = int(re.search(r"trained (\d+) optimizer steps \((\d+) in all", first).group(1))
    assert steps > 0 and f"({steps} in all" in first
    final = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "final").rglob("*") if p.is_file()}
    assert main([*args, "--resume"]) == 0
    assert f"trained 0 optimizer steps ({steps} in all" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "final").rglob("*") if p.is_file()} == final


def launched_run(launch: list[str], data: Path, out: Path, *extra: str, env: dict | None = None
                 ) -> subprocess.CompletedProcess:
    """``accelerate launch <launch> train_launch_worker.py`` with the tiny config (2 epochs, stage 2 from epoch 2)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch,
           str(TESTS / "train_launch_worker.py"), str(data), str(out), *extra, "model.tiny=true",
           "train.eval_every_epochs=0", "train.emission_every_steps=0", "train.save_every_steps=1",
           "optim.batch_size=1", "optim.grad_accum=2", "optim.epochs=2", "optim.stage1_epochs=1",
           "optim.warmup_epochs=0", "cache.enabled=true"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env={**os.environ, **(env or {})})
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return done


def ddp_run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    launch = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    return launched_run(launch, data, out, *extra, env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_process_ddp_gloo_run_keeps_ranks_identical_and_resumes(data, tmp_path):
    """Stage 1 (from the feature cache, each rank building its share) then stage 2 with LoRA + SEG rows; a second
    run stops after 3 steps (mid stage 2) and is resumed by a launch of its own: per-rank RNG and data position make
    it identical. The stopped run trains in the first launch's processes, after the uninterrupted one."""
    out, split = tmp_path / "ddp", tmp_path / "split"
    done = ddp_run(data, out, "--then-stopped", str(split), "--after", "3")
    for rank in (0, 1):
        assert f"rank {rank} of 2 done, 4 steps, ddp" in done.stdout
        assert f"rank {rank} of 2 done, 3 steps, split" in done.stdout
    w0, w1 = (load_file(str(out / f"weights-rank{r}.safetensors")) for r in (0, 1))
    assert w0.keys() == w1.keys() and len(w0) > 10
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert len(losses(out)) == 4  # 6 samples / 2 ranks / (1 × 2 accumulation) = 2 steps per epoch
    assert (out / "final" / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "feature_cache").glob("index-rank*.json")) == ["index-rank0.json",
                                                                                        "index-rank1.json"]
    assert not (split / "final").exists() and len(losses(split)) == 3
    ddp_run(data, split, "--resume")
    assert losses(split) == losses(out)
    resumed = load_file(str(split / "weights-rank1.safetensors"))
    for name in w0:
        assert torch.equal(resumed[name], w0[name]), name


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="accelerate enables FSDP and NCCL on GPUs only; test_train_sharding.py covers FSDP2 on "
                           "CPU, the gloo test above DDP")
@pytest.mark.parametrize("config", ["ddp", "fsdp"])
def test_launch_on_gpus_trains_exports_and_resumes(data, tmp_path, config):
    """configs/accelerate/{ddp,fsdp}.yaml end to end on the GPUs present (one is enough to run accelerate's FSDP2
    path, and DDP's NCCL group, which takes CUDA tensors only: every collective of the step must hand it one)."""
    launch = ["--config_file", str(TESTS.parent / "configs" / "accelerate" / f"{config}.yaml"),
              "--num_processes", str(torch.cuda.device_count())]
    out, split = tmp_path / config, tmp_path / "split"
    done = launched_run(launch, data, out)
    assert "rank 0 of" in done.stdout and (out / "final" / "model.safetensors").exists()
    launched_run(launch, data, split, "--max-steps", "3")
    launched_run(launch, data, split, "--resume")
    assert losses(split) == pytest.approx(losses(out), rel=1e-3)  # bf16 on GPUs: equal up to kernel rounding


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_cached_stage1_matches_uncached(data, tmp_path, dtype, tol):
    """views = epochs, so cached epoch e holds exactly the augmentation the live path draws for epoch e."""
    base = {**FAST, "optim.epochs": 2, "optim.stage1_epochs": 2, "optim.batch_size": 2, "optim.grad_accum": 1,
            "cache.views": 2, "cache.dtype": dtype}
    runs = {}
    for cached in (False, True):
        out = tmp_path / f"cached-{cached}"
        trainer = Trainer.from_config(load_config(None, {**base, "cache.enabled": cached}), data, out)
        trainer.run()
        runs[cached] = losses(out)
    assert len(runs[True]) == 6
    for a, b in zip(runs[True], runs[False]):
        assert abs(a - b) <= tol * abs(b), runs
    cache = trainer.cache
    assert cache.is_complete()
    # Damage after the marker was written (an index, a shard) means building the cache again, not a traceback.
    index = next(cache.dir.glob("index-rank*.json"))
    text = index.read_bytes()
    for damaged in (b"\xff{", b'{"0.0.seg": ["view0-rank0-00000.safetensors"]}'):
        index.write_bytes(damaged)
        assert not cache.is_complete()
    index.write_bytes(text)
    assert cache.is_complete()
    next(cache.dir.glob("view1-*.safetensors")).unlink()
    assert not cache.is_complete()


@pytest.fixture
def nan_loss(monkeypatch):
    """Every training step's loss is NaN (the model's forward poisoned); yields the real forward, to restore it."""
    from detecture.training.model import TrainModule

    forward = TrainModule.forward

    def poisoned(self, batch, stage):
        terms = forward(self, batch, stage)
        terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(TrainModule, "forward", poisoned)
    return forward


def test_nan_guard_skips_then_stops(data, tmp_path, monkeypatch, nan_loss):
    from detecture.training.model import TrainModule

    cfg = load_config(None, {**FAST, "train.max_nonfinite_steps": 3, "optim.grad_accum": 1})
    trainer = Trainer.from_config(cfg, data, tmp_path / "nan")
    before = {n: p.detach().clone() for n, p in trainer.module.named_parameters() if p.requires_grad}
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row") as stopped:
        trainer.run()
    assert trainer.state.nonfinite_total == 3
    for n, p in trainer.module.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, before[n]), n  # skipped steps change nothing
    assert all(math.isnan(v) for v in losses(tmp_path / "nan"))
    # The advice names what a resume can change (optim.lr cannot), and following it resumes from an earlier step.
    message = str(stopped.value)
    assert "--resume-lr-scale" in message and "optim.lr" not in message
    latest = tmp_path / "nan" / "checkpoints" / "latest.json"
    assert str(latest.parent) in message and "latest.json" in message
    latest.write_text(json.dumps({"checkpoint": "step-00000001"}))
    monkeypatch.setattr(TrainModule, "forward", nan_loss)
    resumed = Trainer.from_config(cfg, data, tmp_path / "nan", max_steps=2)
    assert resumed.run(ResumeOptions(resume=True)).steps == 2
    assert [math.isnan(v) for v in losses(tmp_path / "nan")] == [True, False]


def test_the_nan_guard_stops_the_command_unfinished(data, tmp_path, capsys, nan_loss):
    """By then the run has written checkpoints: exit status 3 (stopped unfinished, resume to finish), not 2, which
    says that nothing was done."""
    out = tmp_path / "nan"
    overrides = {**FAST, "train.max_nonfinite_steps": 2, "optim.grad_accum": 1}
    assert main(["train", "--tiny", "--data", str(data), "--out", str(out), *sets(overrides)]) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: 2 optimizer steps in a row")
    assert (out / "checkpoints" / "latest.json").is_file()


def test_a_run_killed_before_its_first_checkpoint_starts_its_logs_afresh(data, tmp_path, monkeypatch):
    """Nothing to resume, so the same command trains from step 1 again: its logs must not hold the killed attempt's
    steps as well."""
    overrides = {**FAST, "train.save_every_steps": 2, "optim.batch_size": 1, "optim.grad_accum": 1,
                 "optim.epochs": 1, "optim.stage1_epochs": 1}
    out = tmp_path / "run"

    def killed(self):
        raise KeyboardInterrupt("killed before the first checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            Trainer.from_config(load_config(None, overrides), data, out, max_steps=3).run()
    assert len(losses(out)) == 2 and not (out / "checkpoints").exists()
    Trainer.from_config(load_config(None, overrides), data, out, max_steps=3).run()
    with (out / "train_log.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    assert len(list((out / "tensorboard").glob("events.*"))) == 1  # the killed attempt's events are gone too


def test_cli_help_and_refusing_to_overwrite(data, tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.json").write_text('{"checkpoint": "step-00000001"}')
    (out / "checkpoints" / "step-00000001").mkdir()
    (out / "checkpoints" / "step-00000001" / "trainer_state.json").write_text("{}")
    assert main(["train", "--tiny", "--data", str(data), "--out", str(out)]) == 2  # needs --resume


def test_a_restart_warmup_without_a_restart_is_a_usage_error(data, tmp_path, capsys):
    """--resume-warmup-epochs is the warm-up of a --resume-lr-scale restart: alone it did nothing, silently."""
    for resume in ([], ["--resume"]):
        args = ["train", "--tiny", "--data", str(data), "--out", str(tmp_path / "run"), *resume]
        assert main([*args, "--resume-warmup-epochs", "2"]) == 2
        assert capsys.readouterr().err == ("error: --resume-warmup-epochs only applies together with "
                                           "--resume-lr-scale (the warm-up of its restart)\n")


class FailingPipeline:
    """Stands in for the pipeline at the point where a live-evaluation sample raises ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def segment(self, images, regime):
        raise self.exc


def test_live_evaluation_records_data_errors_and_stops_on_environment_faults(data):
    """A sample's data error is a recorded failure; out of memory or a CUDA/NCCL fault is nobody's bad sample and
    must stop the run (it was recorded as two failed samples and training went on)."""
    from detecture.errors import DatasetError
    from detecture.training.config import DataConfig
    from detecture.training.dataset import TextureDataset
    from detecture.training.evaluate import live_evaluate

    val = TextureDataset(data, DataConfig(), seed=0, train=False)
    scores = live_evaluate(FailingPipeline(DatasetError("unusable sample")), val, [0, 1])
    assert (scores.n, scores.failures) == (2, 2)
    for fault in (torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("NCCL error: unhandled system error")):
        with pytest.raises(type(fault)):
            live_evaluate(FailingPipeline(fault), val, [0, 1])


def test_an_epoch_evaluated_before_a_kill_is_logged_once(data, tmp_path, monkeypatch):
    """The kill comes after the epoch-end evaluation wrote its row and before the epoch-end checkpoint: the resumed
    run evaluates that epoch again, and its log must still hold one row per epoch."""
    val = write_mosaics(tmp_path / "val", n=1, size=64)
    overrides = {**FAST, "optim.batch_size": 2, "optim.grad_accum": 1, "optim.epochs": 1, "optim.stage1_epochs": 1,
                 "train.eval_every_epochs": 1, "train.eval_max_samples": 1, "train.max_new_tokens": 4}
    out = tmp_path / "run"
    evaluate = Trainer.full_evaluation

    def killed_after(self, monitor, epoch):
        evaluate(self, monitor, epoch)
        raise KeyboardInterrupt("killed after the evaluation, before its checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "full_evaluation", killed_after)
        with pytest.raises(KeyboardInterrupt):
            Trainer.from_config(load_config(None, overrides), data, out, val_data=val).run()
    Trainer.from_config(load_config(None, overrides), data, out, val_data=val).run(ResumeOptions(resume=True))
    with (out / "eval_log.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
    assert tensorboard_steps(out, "eval/miou") == [3]


def test_steps_logged_after_the_checkpoint_are_logged_once_after_resume(data, tmp_path, monkeypatch):
    """Interrupted (Ctrl-C) one step after its checkpoint: the resumed run logs that step again, and TensorBoard
    must show it once, with the resumed run's values."""
    overrides = {**FAST, "train.save_every_steps": 2, "optim.batch_size": 1, "optim.grad_accum": 1,
                 "optim.epochs": 1, "optim.stage1_epochs": 1}
    out = tmp_path / "run"
    log_step = Trainer.log_step

    def interrupted_after_step_3(self, row, monitor, progress):
        log_step(self, row, monitor, progress)
        if row["step"] == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "log_step", interrupted_after_step_3)
        with pytest.raises(KeyboardInterrupt):
            Trainer.from_config(load_config(None, overrides), data, out).run()
    Trainer.from_config(load_config(None, overrides), data, out).run(ResumeOptions(resume=True))
    assert [int(step) for step in losses(out, "step")] == list(range(1, 7))
    assert tensorboard_steps(out, "train/total") == list(range(1, 7))


def test_live_evaluation_monitoring_and_exported_weights(data, tmp_path):
    from detecture.backbones.qwen import QwenVL
    from detecture.bridge.head import DetectureHead

    val = write_mosaics(tmp_path / "val", n=2, size=64)
    out = tmp_path / "run"
    cfg = load_config(None, {**FAST, "optim.epochs": 1, "optim.stage1_epochs": 0, "optim.grad_accum": 1,
                             "train.eval_every_epochs": 1, "train.emission_every_steps": 1,
                             "train.emission_check_samples": 2, "train.eval_max_samples": 2,
                             "train.max_new_tokens": 8})
    trainer = Trainer.from_config(cfg, data, out, val_data=val)
    result = trainer.run()
    with (out / "eval_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["n"] == "2" and rows[0]["failures"] == "0"
    for key in ("seg_emission", "k_accuracy", "miou", "panoptic_iou", "ari"):
        assert 0.0 <= float(rows[0][key]) <= 1.0
    emission = losses(out, "val_seg_emission")
    assert len(emission) == 3 and all(0.0 <= e <= 1.0 for e in emission)
    assert all(0.0 <= v <= 1.0 for v in losses(out, "val_miou_tf"))
    assert all(v > 0 for v in losses(out, "lm"))  # stage 2 throughout: the LM term is trained and logged
    for name in ("loss_curves.png", "eval_curves.png"):
        assert (out / name).stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.*"))
    # the exported head + adapter load the way `detecture segment --head` loads them
    head = DetectureHead.from_pretrained(result.final_dir)
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, trainer.head.state_dict()[name].cpu()), name
    qwen = QwenVL.tiny(cfg.train.seed)
    qwen.load_adapter(DetectureHead.adapter_path(result.final_dir))
    seg = qwen.seg_token_id
    trained = trainer.qwen.model.get_input_embeddings()(torch.tensor([[seg]]))
    assert torch.equal(qwen.model.get_input_embeddings()(torch.tensor([[seg]])), trained)


def test_a_seg_emission_check_off_the_log_cadence_is_logged_and_kept_on_resume(data, tmp_path):
    """log_every 2, emission_every_steps 3: the check of step 3 is computed (a generation) and must reach the log,
    and a resume from step 3 keeps that row once in the CSV and in TensorBoard."""
    val = write_mosaics(tmp_path / "val", n=1, size=64)
    overrides = {**FAST, "optim.batch_size": 1, "optim.grad_accum": 1, "optim.epochs": 1, "optim.stage1_epochs": 0,
                 "optim.warmup_epochs": 0, "train.log_every": 2, "train.emission_every_steps": 3,
                 "train.emission_check_samples": 1, "train.max_new_tokens": 4}
    out = tmp_path / "run"
    Trainer.from_config(load_config(None, overrides), data, out, val_data=val, max_steps=3).run()
    Trainer.from_config(load_config(None, overrides), data, out, val_data=val).run(ResumeOptions(resume=True))
    with (out / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]  # 6 steps: every second one, and the checks' 3 and 6
    assert [int(r["step"]) for r in rows if r["val_seg_emission"] != ""] == [3, 6]
    assert tensorboard_steps(out, "train/val_seg_emission") == [3, 6]
    assert tensorboard_steps(out, "train/total") == [2, 3, 4, 6]


def test_resuming_at_max_steps_trains_nothing_and_fewer_epochs_than_done_are_refused(data, tmp_path, capsys):
    """The same `--resume --max-steps N` command run again (a scheduler's restart) must not train step N + 1; and
    `--epochs` below the epochs a checkpoint has trained is one error line, not a silent re-export."""
    overrides = {**FAST, "optim.batch_size": 1, "optim.grad_accum": 2, "optim.epochs": 2, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0}
    out = tmp_path / "run"
    args = cli("--data", str(data), "--out", str(out), *sets(overrides))[3:]  # the CLI, in-process
    assert main([*args, "--max-steps", "2"]) == 0
    checkpoint = out / "checkpoints" / "step-00000002" / "trainable.safetensors"
    weights, logged = checkpoint.read_bytes(), (out / "train_log.csv").read_text()
    capsys.readouterr()
    assert main([*args, "--max-steps", "2", "--resume"]) == 0
    assert "trained 0 optimizer steps (2 in all" in capsys.readouterr().out
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["optimizer_step"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000001", "step-00000002"]
    assert checkpoint.read_bytes() == weights and (out / "train_log.csv").read_text() == logged
    assert not (out / "final").exists()  # stopped by --max-steps, as the first attempt was
    # 3 steps per epoch: step 4 is in the second epoch, so the run has trained into 2 epochs
    assert main([*args, "--max-steps", "4", "--resume"]) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--epochs", "1", "--set", "optim.stage1_epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.epochs 1 is fewer than the 2 epoch(s)" in err, err


def test_resume_refuses_other_data_or_process_count_with_the_same_steps_per_epoch(data, tmp_path, capsys):
    """The data position counts the kept samples in a seeded order: 5 samples cut into as many steps as 6 were
    accepted, and so was another process count. The same kept samples (the bad records skipped anyway) are not a
    change."""
    overrides = {**FAST, "optim.batch_size": 1, "optim.grad_accum": 2, "optim.epochs": 2, "optim.stage1_epochs": 1,
                 "optim.warmup_epochs": 0}
    out = tmp_path / "run"

    def args(folder: Path) -> list[str]:  # the CLI, in-process
        return cli("--data", str(folder), "--out", str(out), *sets(overrides))[3:]

    assert main([*args(data), "--max-steps", "1"]) == 0
    capsys.readouterr()
    fewer = write_mosaics(tmp_path / "five", n=5, size=64)  # 3 steps per epoch, as the 6 kept samples of `data`
    assert main([*args(fewer), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot change the training data (6 -> 5 kept samples" in err, err
    same = write_mosaics(tmp_path / "same", n=6, size=64)  # `data` without its bad records
    assert main([*args(same), "--resume", "--max-steps", "1"]) == 0
    state_file = out / "checkpoints" / "step-00000001" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "world_size": 2}))
    capsys.readouterr()
    assert main([*args(data), "--resume"]) == 2
    assert "cannot change the process count (2 -> 1)" in capsys.readouterr().err


class _Built(Exception):
    """Raised in place of building the trainer: the config a command line makes is all a test needs."""


def _config_of(argv: list[str], tmp_path: Path, monkeypatch) -> Config:
    """The config ``detecture train argv`` builds its trainer from (the trainer itself never built)."""
    from detecture.training.loop import Trainer

    configs = []

    def built(cfg, *args, **kwargs):
        configs.append(cfg)
        raise _Built

    monkeypatch.setattr(Trainer, "from_config", built)
    (tmp_path / "data").mkdir(exist_ok=True)
    with pytest.raises(_Built):
        main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *argv])
    return configs[-1]


@pytest.mark.parametrize("options, same_as", [
    (["--qwen", "my/qwen"], ["--set", "model.qwen=my/qwen"]),
    (["--sam3", "my/sam3"], ["--set", "model.sam3=my/sam3"]),
])
def test_qwen_and_sam3_options_set_the_config_backbones(tmp_path, monkeypatch, options, same_as):
    """--qwen and --sam3, the names every command gives those models, set model.qwen and model.sam3."""
    assert _config_of(options, tmp_path, monkeypatch).model == _config_of(same_as, tmp_path, monkeypatch).model
    assert _config_of(options, tmp_path, monkeypatch).model != _config_of([], tmp_path, monkeypatch).model


@pytest.mark.parametrize("key, value", [("lora.alpha", 32), ("lora.r", 4), ("lora.target_modules", ["q_proj"]),
                                        ("model.qwen", "Qwen/Qwen3-VL-8B-Thinking"), ("model.sam3", "other/sam3"),
                                        ("model.tiny", True), ("model.quantization", "4bit")])
def test_resume_refuses_another_lora_or_backbone(key, value):
    """The saved LoRA means alpha / r times its product on the layers it was trained on, of the backbone it was
    trained with (and its quantization, which the head records): another one of the same widths would load it
    silently."""
    saved = json.loads(json.dumps(load_config(None).to_dict()))  # as trainer_state.json holds it
    changed = changed_on_resume(saved, load_config(None, {key: value}), ResumeOptions(resume=True))
    assert [c.split(" ")[0] for c in changed] == [key]
    assert changed_on_resume(saved, load_config(None, {"lora.dropout": 0.1}), ResumeOptions(resume=True)) == []


def test_resume_continues_under_the_runs_own_config(data, tmp_path, caplog):
    """A --resume without --config starts from the run's config.json, so its --set values hold without being
    repeated: under the built-in defaults (optim.stage1_epochs 8) the extended run was refused."""
    import logging

    overrides = {**FAST, "optim.batch_size": 2, "optim.grad_accum": 1, "optim.warmup_epochs": 0,
                 "optim.stage1_epochs": 1}
    out = tmp_path / "run"
    assert main(cli("--data", str(data), "--out", str(out), "--epochs", "1", *sets(overrides))[3:]) == 0
    with caplog.at_level(logging.INFO, logger="detecture.commands.train"):
        assert main(["train", "--tiny", "--data", str(data), "--out", str(out), "--resume", "--epochs", "2"]) == 0
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["optim"]["stage1_epochs"] == 1 and recorded["optim"]["epochs"] == 2
    assert recorded["train"]["save_every_steps"] == 1  # a --set of the first run, not the default
    assert len(losses(out)) == 6  # 3 steps per epoch, extended from 1 to 2 epochs
    assert f"training config: {out / 'config.json'}, with --tiny, --epochs 2 on top" in caplog.text
