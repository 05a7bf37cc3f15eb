"""Training checkpoints: safetensors for every tensor, JSON for everything else, never pickle.

Layout of ``<out>/checkpoints/step-00001234/`` (written into a temporary directory and renamed, so a kill at any
moment leaves either the previous checkpoint or the complete new one; ``latest.json`` is replaced atomically last)::

    trainable.safetensors   every trainable parameter of the training module (Bridge, dustbin, mask head, LoRA,
                            SEG rows), by name
    optimizer.safetensors   AdamW moments, keyed "state.<param index>.<name>"
    optimizer.json          param groups (hyper-parameters, member names) and non-tensor state
    rng.safetensors         torch CPU / CUDA generator states of every rank
    rng.json                python ``random`` and numpy states of every rank
    trainer_state.json      epoch, batch position in the epoch, step counters, NaN-guard counters, LR schedule,
                            resolved config
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import atomic
from ..errors import CheckpointError

log = logging.getLogger(__name__)

LATEST = "latest.json"


@dataclass
class TrainerState:
    """Where training is: ``batch_in_epoch`` micro-batches of ``epoch`` are done (the data position)."""

    epoch: int = 0
    batch_in_epoch: int = 0
    optimizer_step: int = 0
    nonfinite_streak: int = 0
    nonfinite_total: int = 0
    schedule: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that require grad, by qualified name."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved trainable parameters in place; a missing or unexpected name is a :class:`CheckpointError`."""
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: trainable parameters differ from this model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); was it trained with another config or backbone?"
        )
    with torch.no_grad():
        for name, p in params.items():
            if p.shape != tensors[name].shape:
                raise CheckpointError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, model {tuple(p.shape)}")
            p.copy_(tensors[name].to(p.device, p.dtype))


def _is_tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def optimizer_to_files(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """Split an optimizer state dict into (tensors, JSON) parts; ``names`` maps param index → parameter name."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if _is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{**g, "param_names": [names[i] for i in g["params"]]} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, names: dict[int, str], source: str
) -> None:
    """Inverse of :func:`optimizer_to_files`; refuses a state whose parameter groups name other parameters."""
    current = optimizer.state_dict()["param_groups"]
    saved = meta["param_groups"]
    for g_now, g_saved in zip(current, saved):
        if [names[i] for i in g_now["params"]] != g_saved["param_names"] or len(current) != len(saved):
            raise CheckpointError(f"{source}: optimizer parameter group {g_saved.get('name')!r} does not match this model")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = [{k: v for k, v in g.items() if k != "param_names"} for g in saved]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


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
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    param_names: dict[int, str],
    state: TrainerState,
    rng_per_rank: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
) -> Path:
    """Write one complete checkpoint directory atomically and point ``latest.json`` at it. Main process only."""
    directory = Path(directory)
    with atomic.atomic_dir(directory) as tmp:
        save_file(trainable_state(module), str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = optimizer_to_files(optimizer, param_names)
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


def prune_checkpoints(checkpoints: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``step-*`` directories (never the one ``latest.json`` points to).

    Each is first renamed to a hidden ``.step-*.deleting`` name (atomic), so a run killed mid-deletion never leaves a
    half-deleted checkpoint that looks like a real one; leftovers of such a kill are removed on the next prune.
    """
    checkpoints = Path(checkpoints)
    for leftover in checkpoints.glob(".step-*.deleting"):
        shutil.rmtree(leftover)
    latest = latest_checkpoint(checkpoints)
    for old in sorted(checkpoints.glob("step-*"))[:-keep]:
        if old != latest:
            doomed = old.with_name(f".{old.name}.deleting")
            os.replace(old, doomed)
            shutil.rmtree(doomed)


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The directory ``latest.json`` points to, or None when no checkpoint was ever completed."""
    pointer = Path(checkpoints) / LATEST
    if not pointer.exists():
        return None
    path = Path(checkpoints) / json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
    if not (path / "trainer_state.json").exists():
        raise CheckpointError(f"{pointer}: points to {path}, which is not a complete checkpoint")
    return path


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path}: missing from the checkpoint")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated / corrupt files
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None


def load_checkpoint(
    directory: Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    param_names: dict[int, str],
    rank: int,
) -> TrainerState:
    """Restore weights, optimizer and this rank's RNG in place; return the trainer state."""
    directory = Path(directory)
    state = TrainerState(**_read_json(directory / "trainer_state.json"))
    load_trainable_state(module, _read_tensors(directory / "trainable.safetensors"), str(directory))
    optimizer_from_files(
        optimizer,
        _read_tensors(directory / "optimizer.safetensors"),
        _read_json(directory / "optimizer.json"),
        param_names,
        str(directory),
    )
    rng_meta = _read_json(directory / "rng.json")
    key = f"rank{rank}"
    if key not in rng_meta:
        log.warning("%s: no RNG state for rank %d (saved with %d processes); RNG not restored", directory, rank,
                    state.world_size)
    else:
        tensors = _read_tensors(directory / "rng.safetensors")
        restore_rng({k[len(key) + 1 :]: v for k, v in tensors.items() if k.startswith(key + ".")}, rng_meta[key])
    return state
