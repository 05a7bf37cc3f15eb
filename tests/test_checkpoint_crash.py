"""``train --resume`` survives a kill at every rename of a checkpoint save, and checkpoints keep plain-write modes.

A real ``kill -9`` of a training run (tests/test_train_loop.py) hits one moment at random; here a forked child runs
the save sequence of an epoch that ends right after a saved step (step 2 saved mid-epoch, saved again at the epoch
end, then pruned) and ends itself with ``os._exit`` (no ``finally`` blocks run, as under SIGKILL) just before its
n-th rename or tree deletion, for every n. Each leftover state must resume: the checkpoint ``latest.json`` names
loads, and the next save leaves no temporaries behind.
"""

from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch

from detecture.training import checkpoint as ckpt

KILLED = 77


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW([{"params": list(model.parameters()), "name": "head"}], lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def _save(checkpoints, model, optimizer, state: ckpt.TrainerState) -> None:
    from detecture.training import sharding

    target = checkpoints / f"step-{state.optimizer_step:08d}"
    ckpt.save_checkpoint(target, sharding.trainable_state(model), sharding.optimizer_state(model, optimizer), state,
                         [ckpt.capture_rng()])
    ckpt.prune_checkpoints(checkpoints, keep=1)


def _epoch_end_sequence(checkpoints, model, optimizer) -> None:
    _save(checkpoints, model, optimizer, ckpt.TrainerState(epoch=0, batch_in_epoch=4, optimizer_step=2))
    _save(checkpoints, model, optimizer, ckpt.TrainerState(epoch=1, batch_in_epoch=0, optimizer_step=2))


def _run_killed_at(n: int, checkpoints, model, optimizer) -> bool:
    """Run the sequence in a child that dies before its n-th rename / deletion; True if it got that far."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        calls = [0]

        def dying(real):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == n:
                    os._exit(KILLED)
                return real(*args, **kwargs)
            return call

        os.replace, os.rename, shutil.rmtree = dying(os.replace), dying(os.rename), dying(shutil.rmtree)
        try:
            _epoch_end_sequence(checkpoints, model, optimizer)
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, KILLED)
    return code == KILLED


def test_a_kill_at_every_rename_leaves_a_resumable_checkpoint(tmp_path):
    model, optimizer = _model()
    previous = tmp_path / "previous"  # a run that already holds step 1, as every kill after the first save does
    _save(previous, model, optimizer, ckpt.TrainerState(epoch=0, batch_in_epoch=2, optimizer_step=1))
    n = 0
    while True:
        n += 1
        checkpoints = tmp_path / f"kill-{n}"
        shutil.copytree(previous, checkpoints)
        if not _run_killed_at(n, checkpoints, model, optimizer):
            break
        latest = ckpt.latest_checkpoint(checkpoints)  # --resume: puts a moved-aside checkpoint back
        assert latest is not None and latest.name in ("step-00000001", "step-00000002"), n
        resumed_model, resumed_optimizer = _model()
        state = ckpt.load_checkpoint(latest, resumed_model, resumed_optimizer, rank=0)
        assert state.optimizer_step == int(latest.name.removeprefix("step-"))
        _save(checkpoints, resumed_model, resumed_optimizer,
              ckpt.TrainerState(epoch=1, batch_in_epoch=1, optimizer_step=3))
        assert sorted(p.name for p in checkpoints.iterdir()) == ["latest.json", "step-00000003"], n
    assert n > 6  # the sequence has that many renames and deletions: each was a kill point


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_files_get_plain_write_modes(tmp_path, umask):
    model, optimizer = _model()
    old = os.umask(umask)
    try:
        _save(tmp_path, model, optimizer, ckpt.TrainerState(optimizer_step=1))
    finally:
        os.umask(old)
    files = list((tmp_path / "step-00000001").iterdir())
    assert {f.name for f in files} >= {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors"}
    for path in files + [tmp_path / "latest.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
