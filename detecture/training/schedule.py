"""Per-group learning-rate schedule: linear warm-up, cosine decay, a two-stage curriculum and micro-warm-up restarts.

Written as a pure function of the optimizer step (rather than a chain of torch ``LRScheduler`` objects) because the
published recipe needs three things the stock schedulers do not combine: per-group stage scales that change at an
epoch boundary, a min-lr clamp per group (a group whose peak is below ``min_lr`` must not be *raised* by the cosine
floor), and a restart that keeps AdamW moments but warms up again to a scaled peak. Being a function of the step
also makes resume exact: the state is the spec plus the step count, both JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .config import GROUPS, OptimConfig


@dataclass(frozen=True)
class Restart:
    """A micro-warm-up restart: from ``step`` on, peaks × ``lr_scale``, ``warmup_epochs`` of warm-up, then cosine."""

    step: int
    lr_scale: float
    warmup_epochs: float


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    min_lr: float
    epochs: int
    warmup_epochs: float
    stage1_epochs: int
    steps_per_epoch: int
    stage1_scales: dict[str, float]
    stage2_scales: dict[str, float]
    restart: Restart | None = None

    @classmethod
    def from_config(cls, optim: OptimConfig, steps_per_epoch: int) -> "LRSchedule":
        return cls(
            lr=optim.lr,
            min_lr=optim.min_lr,
            epochs=optim.epochs,
            warmup_epochs=optim.warmup_epochs,
            stage1_epochs=optim.stage1_epochs,
            steps_per_epoch=max(1, steps_per_epoch),
            stage1_scales={g: float(optim.stage1_scales.get(g, 0.0)) for g in GROUPS},
            stage2_scales={g: float(optim.stage2_scales.get(g, 0.0)) for g in GROUPS},
        )

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def stage(self, step: int) -> int:
        """1 or 2; stage 2 starts at the first step of epoch ``stage1_epochs`` (0-based)."""
        return 1 if step < self.stage1_epochs * self.steps_per_epoch else 2

    def peak(self, group: str, step: int) -> float:
        scales = self.stage1_scales if self.stage(step) == 1 else self.stage2_scales
        peak = self.lr * scales[group]
        if self.restart is not None and step >= self.restart.step:
            peak *= self.restart.lr_scale
        return peak

    def lr_at(self, group: str, step: int) -> float:
        """Learning rate of ``group`` for optimizer step ``step`` (0-based)."""
        peak = self.peak(group, step)
        if peak == 0.0:
            return 0.0
        floor = min(self.min_lr, peak)  # per-group clamp: never lift a small-peak group up to min_lr
        start, warmup = 0, self.warmup_epochs * self.steps_per_epoch
        if self.restart is not None and step >= self.restart.step:
            start, warmup = self.restart.step, self.restart.warmup_epochs * self.steps_per_epoch
        u = step - start
        if u < warmup:
            # capped: a warm-up that is not a whole number of steps (0.5 epoch of 5 steps) would end above the peak
            return peak * min(1.0, (u + 1) / warmup)
        span = max(1.0, self.total_steps - start - warmup)
        progress = min(1.0, (u - warmup) / span)
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> dict[str, float]:
        """Set every param group's lr (groups carry a ``"name"`` key) for ``step``; returns {group: lr}."""
        lrs = {}
        for group in optimizer.param_groups:
            group["lr"] = lrs[group["name"]] = self.lr_at(group["name"], step)
        return lrs

    def with_restart(self, step: int, lr_scale: float, warmup_epochs: float, epochs: int) -> "LRSchedule":
        """The schedule after a micro-warm-up restart at ``step`` (``epochs`` may extend the run, e.g. 20 → 30)."""
        fields = {**asdict(self), "epochs": epochs, "restart": Restart(step, lr_scale, warmup_epochs)}
        return LRSchedule(**fields)

    def holds_restart(self, lr_scale: float, warmup_epochs: float, epochs: int) -> bool:
        """Whether this schedule is already the restart that :meth:`with_restart` makes of these arguments: the same
        restart command run again after a crash then continues it from its own step instead of warming up again
        from wherever the run resumes."""
        r = self.restart
        return r is not None and (r.lr_scale, r.warmup_epochs, self.epochs) == (lr_scale, warmup_epochs, epochs)

    def with_epochs(self, epochs: int) -> "LRSchedule":
        return LRSchedule(**{**asdict(self), "epochs": epochs, "restart": self.restart})

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "LRSchedule":
        restart = state.get("restart")
        return cls(**{**state, "restart": Restart(**restart) if restart else None})
