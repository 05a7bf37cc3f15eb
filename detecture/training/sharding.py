"""Full trainable state and rank-local work, whatever the launch shards: one code path for a plain module, DDP and
FSDP2.

Checkpoints and exports hold the *full* trainable state (Bridge, LoRA, SEG rows and their AdamW moments). torch's
distributed-checkpoint state-dict API gathers it under FSDP (``full_state_dict``) and names every tensor by its
unwrapped qualified name, so the files are the same whichever way a run was launched.

Live generation and the feature-cache build run on each rank by itself (rank 0 only, or a different number of
forwards per rank), which FSDP's sharded parameters cannot do: every forward of a sharded unit is a collective.
:func:`gathered_weights` all-gathers every FSDP unit for the duration of such work.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule

from ..errors import CheckpointError

# Gathered to CPU on rank 0 only (other ranks get empty dicts); frozen backbone weights are never collected.
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
# Loading: every rank passes the full tensors it read from the checkpoint; DCP keeps its own shard of each.
SCATTER = StateDictOptions(full_state_dict=True, strict=False)


def unwrapped(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (FSDP2 shards in place, so its module is already the original)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def trainable_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Global shape of every parameter that requires grad, by qualified name (a DTensor reports its full shape)."""
    return {n: tuple(p.shape) for n, p in unwrapped(model).named_parameters() if p.requires_grad}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable parameters on rank 0 (empty elsewhere). Collective: call on every rank."""
    names = trainable_shapes(model)
    state = get_model_state_dict(model, options=GATHER)
    # Buffers, which DCP keeps, are dropped. DCP returns a CPU-resident tensor itself, so copies are made: the state
    # must not change when training goes on.
    return {n: t.detach().clone().contiguous() for n, t in state.items() if n in names}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimizer state keyed by parameter name (``{"state": {name: {...}}, "param_groups": [...]}``) on rank 0,
    empty elsewhere. Collective: call on every rank."""
    stateful = _stateful_names(model, optimizer)
    state = get_optimizer_state_dict(model, optimizer, options=GATHER)
    _forget_state(model, optimizer, keep=stateful)
    if state:  # copies, as in trainable_state
        state["state"] = {name: {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
                          for name, values in state["state"].items() if name in stateful}
    return state


def _stateful_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> set[str]:
    return {n for n, p in unwrapped(model).named_parameters() if optimizer.state.get(p)}


def _forget_state(model: nn.Module, optimizer: torch.optim.Optimizer, keep: set[str]) -> None:
    """Drop the AdamW state of every parameter not in ``keep``.

    DCP fills in missing optimizer state with a zero-lr step, so parameters that have not been trained yet (LoRA and
    the SEG rows in stage 1) would enter stage 2 with a step count of 1 and bias corrections unlike an uninterrupted
    run's; removing that state keeps save and resume exact.
    """
    for name, p in unwrapped(model).named_parameters():
        if name not in keep:
            optimizer.state.pop(p, None)


def load_trainable_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load saved trainable parameters (every rank passes the full set); mismatched names or shapes are a
    :class:`CheckpointError` naming ``source``."""
    shapes = trainable_shapes(model)
    missing, unexpected = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: trainable parameters differ from this model (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); was it trained with another config or backbone?"
        )
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, model {shape}")
    set_model_state_dict(model, tensors, options=SCATTER)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         source: str) -> None:
    """Load a full optimizer state; refuses one whose parameter groups name other parameters."""
    names = {id(p): n for n, p in unwrapped(model).named_parameters()}
    now = [(g.get("name"), [names[id(p)] for p in g["params"]]) for g in optimizer.param_groups]
    saved = [(g.get("name"), list(g["params"])) for g in state["param_groups"]]
    if now != saved:
        raise CheckpointError(f"{source}: optimizer parameter groups {[n for n, _ in saved]} do not match this "
                              f"model's {[n for n, _ in now]} (another config or backbone?)")
    set_optimizer_state_dict(model, optimizer, state, options=SCATTER)
    _forget_state(model, optimizer, keep=set(state["state"]))


@contextlib.contextmanager
def gathered_weights(model: nn.Module) -> Iterator[None]:
    """Unshard every FSDP unit of ``model`` on entry and reshard on exit (a no-op when nothing is sharded).

    Collective: every rank must enter, even those with no work inside. Inside, forwards need no communication (units
    are kept unsharded after each forward), so one rank may generate alone. Costs the full model's memory on every
    rank for the duration.
    """
    units = [m for m in unwrapped(model).modules() if isinstance(m, FSDPModule)]  # outermost (the root) first
    if units:
        # A unit forward before the root's first forward would make that unit a root of its own (e.g. the feature
        # cache, built before the first training step); FSDP2 only initialises roots lazily, so do it here.
        units[0]._get_fsdp_state()._lazy_init()
    saved = [_reshard_settings(unit) for unit in units]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit, settings in zip(units, saved):
            unit.reshard()
            _restore_reshard_settings(unit, settings)


def _reshard_settings(unit: FSDPModule) -> tuple:
    """A unit's reshard-after-forward settings. FSDP2 has a public setter but no getter, and the root's default
    (``False`` once lazily initialised) must survive an evaluation, so they are read from its state."""
    state = unit._get_fsdp_state()
    return state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in state._fsdp_param_groups]


def _restore_reshard_settings(unit: FSDPModule, settings: tuple) -> None:
    state = unit._get_fsdp_state()
    state._auto_reshard_after_forward, infos = settings
    for group, info in zip(state._fsdp_param_groups, infos):
        group.post_forward_mesh_info = info
