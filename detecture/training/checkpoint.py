"""Training checkpoints: safetensors for every tensor, JSON for everything else, never pickle.

Layout of ``<out>/checkpoints/step-00001234/`` (written into a temporary directory and renamed, so a kill at any
moment leaves either the previous checkpoint or the complete new one; ``latest.json`` is replaced atomically last;
re-saving a step moves the old folder aside only once the new one is complete, and :func:`latest_checkpoint` puts it
back if a kill came between the two renames)::

    trainable.safetensors   every trainable parameter of the training module (Bridge, dustbin, mask head, LoRA,
                            SEG rows), in full, by unwrapped name (the same whether the run used DDP or FSDP)
    optimizer.safetensors   AdamW moments and step counts, keyed "state.<param name>.<key>"
    optimizer.json          param groups (hyper-parameters, member names) and non-tensor state
    rng.safetensors         torch CPU / CUDA generator states of every rank
    rng.json                python ``random`` and numpy states of every rank
    trainer_state.json      epoch, batch position in the epoch, step counters, NaN-guard counters, LR schedule,
                            resolved config, process count, the training data's sample count and digest
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError, InputError
from ..utils import atomic
from ..utils.json_files import read_json_object
from ..utils.typed_config import Integer, config_class, parse_config
from . import sharding

log = logging.getLogger(__name__)

LATEST = "latest.json"


@config_class
class TrainerState:
    """Where training is: ``batch_in_epoch`` micro-batches of ``epoch`` are done (the data position).

    Typed like the training config, so a ``trainer_state.json`` of the wrong shape is one line naming the file and
    the key when a run resumes, not a ``TypeError`` from deep inside it.
    """

    epoch: Integer = 0
    batch_in_epoch: Integer = 0
    optimizer_step: Integer = 0
    nonfinite_streak: Integer = 0
    nonfinite_total: Integer = 0
    schedule: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    world_size: Integer = 1
    # The training data the data position counts in (ScanReport.digest); empty in checkpoints written before it was
    # recorded.
    dataset_samples: Integer = 0
    dataset_digest: str = ""


def optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a full, name-keyed optimizer state (:func:`detecture.training.sharding.optimizer_state`) into
    safetensors (``"state.<param name>.<key>"``) and JSON (param groups, non-tensor state) parts."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{name}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_files` (parameter names contain dots, state keys do not)."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, field_name = key[len("state."):].rsplit(".", 1)
        state.setdefault(name, {})[field_name] = value
    for name, values in meta["scalars"].items():
        state.setdefault(name, {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states, split into tensors and JSON-able values."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state(legacy=False)  # MT19937: {"bit_generator", "state": {"key": uint32[624], "pos"}}
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    return tensors, {"python": [py[0], list(py[1]), py[2]], "numpy": np_state}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = meta["numpy"]
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def save_checkpoint(
    directory: Path,
    trainable: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: TrainerState,
    rng_per_rank: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
) -> Path:
    """Write one complete checkpoint directory atomically and point ``latest.json`` at it. Main process only; the
    trainable and optimizer states are the full ones gathered by :mod:`detecture.training.sharding`."""
    directory = Path(directory)
    with atomic.atomic_dir(directory) as tmp:
        save_file(trainable, str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = optimizer_to_files(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        atomic.write_json(tmp / "optimizer.json", opt_meta)
        rng_tensors: dict[str, torch.Tensor] = {}
        rng_meta: dict[str, Any] = {}
        for rank, (t, m) in enumerate(rng_per_rank):
            rng_tensors.update(_prefixed(t, f"rank{rank}"))
            rng_meta[f"rank{rank}"] = m
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        atomic.write_json(tmp / "rng.json", rng_meta)
        atomic.write_json(tmp / "trainer_state.json", asdict(state))
    atomic.write_json(directory.parent / LATEST, {"checkpoint": directory.name, "optimizer_step": state.optimizer_step})
    log.info("checkpoint written: %s", directory)
    return directory


def export_trained(final: Path, module: torch.nn.Module, trainable: dict[str, torch.Tensor]) -> Path:
    """Write ``final``: the head folder (config + safetensors) with the PEFT adapter inside, which
    ``DetecturePipeline.from_pretrained(head=...)`` and ``detecture segment --head`` load. Main process only.

    The tensors come from ``trainable`` (:func:`detecture.training.sharding.trainable_state`, keyed by the training
    module's names), not from the modules, whose parameters may be shards.
    """
    final = Path(final)
    peft_state = {k.removeprefix("qwen_model."): v for k, v in trainable.items() if k.startswith("qwen_model.")}
    head_state = {k.removeprefix("head."): v for k, v in trainable.items() if k.startswith("head.")}
    with tempfile.TemporaryDirectory(dir=final.parent) as adapter:
        module.qwen_model.save_pretrained(adapter, state_dict=peft_state)
        module.head.save_pretrained(final, adapter_dir=adapter, state_dict=head_state)
    return final


def prune_checkpoints(checkpoints: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``step-*`` directories (never the one ``latest.json`` points to; ``keep``
    may be 0 to make room before a new checkpoint is written).

    Each is first renamed to a hidden ``.step-*.deleting`` name (atomic), so a run killed mid-deletion never leaves a
    half-deleted checkpoint that looks like a real one; leftovers of such a kill, and the temporaries of a save or
    ``latest.json`` write a kill interrupted, are removed on the next prune.
    """
    checkpoints = Path(checkpoints)
    latest = latest_checkpoint(checkpoints)
    for leftover in checkpoints.glob(".step-*.deleting"):
        shutil.rmtree(leftover)
    for name in ("step-*", LATEST):
        for leftover in atomic.remove_temporaries(checkpoints, name):
            log.info("removed %s, left behind by an interrupted checkpoint write", leftover)
    existing = sorted(checkpoints.glob("step-*"))
    for old in existing[: max(len(existing) - keep, 0)]:
        if old != latest:
            doomed = old.with_name(f".{old.name}.deleting")
            os.replace(old, doomed)
            shutil.rmtree(doomed)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The directory ``latest.json`` points to, or None when no checkpoint was ever completed. A kill while that
    step was being saved again may have left it moved aside (see :func:`atomic.atomic_dir`); it is put back."""
    pointer = Path(checkpoints) / LATEST
    if not pointer.exists():
        return None
    name = _read_json(pointer).get("checkpoint")
    # the pointer names a folder beside it: a hand-edited one may not lead the resume (and its clean-up) elsewhere
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise CheckpointError(f"{pointer}: 'checkpoint' must name a checkpoint folder beside it, got {name!r}")
    path = Path(checkpoints) / name
    atomic.restore_moved_aside(path)
    if not (path / "trainer_state.json").exists():
        raise CheckpointError(f"{pointer}: points to {path}, which is not a complete checkpoint")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    return read_json_object(path, "checkpoint file")


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated / corrupt files
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def read_state(directory: Path) -> TrainerState:
    """The trainer state of the checkpoint ``directory`` (cheap: no tensors are read)."""
    path = Path(directory) / "trainer_state.json"
    try:
        return parse_config(TrainerState, _read_json(path), str(path), json=True)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int
                    ) -> TrainerState:
    """Restore weights, optimizer and this rank's RNG in place; return the trainer state. Every rank calls it (each
    reads the full files and keeps its own shard under FSDP)."""
    directory = Path(directory)
    state = read_state(directory)
    sharding.load_trainable_state(model, _read_tensors(directory / "trainable.safetensors"), str(directory))
    saved = optimizer_from_files(_read_tensors(directory / "optimizer.safetensors"),
                                 _read_json(directory / "optimizer.json"))
    sharding.load_optimizer_state(model, optimizer, saved, str(directory))
    rng_meta = _read_json(directory / "rng.json")
    key = f"rank{rank}"
    if key not in rng_meta:
        log.warning("%s: no RNG state for rank %d (saved with %d processes); RNG not restored", directory, rank,
                    state.world_size)
    else:
        tensors = _read_tensors(directory / "rng.safetensors")
        restore_rng({k[len(key) + 1 :]: v for k, v in tensors.items() if k.startswith(key + ".")}, rng_meta[key])
    return state
