"""Training monitoring: a per-step CSV (the record of truth), the accelerator's trackers (TensorBoard), and
loss-curve PNGs at the end.

The CSV is append-only and flushed every row, so a killed run keeps its history; on resume rows past the checkpoint
(its step; for evaluation rows, the epochs it has finished) are dropped first, so the file reads as one uninterrupted
run. A run killed before its first checkpoint starts afresh when run again, and so do its logs (:func:`clear_logs`).
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from ..utils import atomic
from ..utils.plotting import pyplot, save_figure

log = logging.getLogger(__name__)

STEPS_CSV = "train_log.csv"
EVAL_CSV = "eval_log.csv"


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def truncate_after(path: Path, step: int, key: str = "step") -> None:
    """Keep only rows with ``row[key] <= step`` (atomic rewrite; ``key`` may be ``"epoch"``); used when resuming
    from a checkpoint."""
    rows = _read_rows(path)
    if not rows:
        return
    kept = [r for r in rows if int(float(r[key])) <= step]
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def clear_logs(out: Path, tracker_run: str) -> None:
    """Delete the CSV logs and the tracker's folder (``<out>/<tracker_run>``, TensorBoard's events) of a run that
    stopped before its first checkpoint: training starts again from step 1, and appending would log its steps twice."""
    stale = [path for path in (out / STEPS_CSV, out / EVAL_CSV, out / tracker_run) if path.exists()]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if stale:
        log.info("starting afresh: removed %s of a run that stopped before its first checkpoint",
                 ", ".join(p.name for p in stale))


class CsvLog:
    """Append rows with a fixed header; new keys after the first row are an error (the schema is set at start)."""

    def __init__(self, path: Path, fieldnames: list[str]) -> None:
        self.path = path
        self.fieldnames = fieldnames
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = _read_rows(path)
        if existing and list(existing[0]) != fieldnames:
            raise ValueError(f"{path}: existing columns {list(existing[0])} differ from {fieldnames}")
        self._file = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=fieldnames, extrasaction="raise")
        if not existing and path.stat().st_size == 0:
            self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({k: row.get(k, "") for k in self.fieldnames})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Monitor:
    """Fan-out of metrics to the CSV logs (main process only) and to the accelerator's trackers (``accelerator.log``,
    which runs on the main process only, as ``accelerate``'s examples do)."""

    def __init__(self, out: Path, step_fields: list[str], eval_fields: list[str], accelerator: Any,
                 tracker_run: str) -> None:
        self.out = Path(out)
        self.acc = accelerator
        self.enabled = accelerator.is_main_process
        self.steps: CsvLog | None = None
        self.evals: CsvLog | None = None
        if not self.enabled:
            return
        self.steps = CsvLog(self.out / STEPS_CSV, step_fields)
        self.evals = CsvLog(self.out / EVAL_CSV, eval_fields)
        accelerator.init_trackers(tracker_run)

    def _track(self, prefix: str, row: dict[str, Any], skip: tuple[str, ...]) -> None:
        values = {f"{prefix}/{key}": value for key, value in row.items()
                  if key not in skip and isinstance(value, (int, float)) and math.isfinite(value)}
        self.acc.log(values, step=row["step"])

    def log_step(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.steps.write(row)
        self._track("train", row, ("step",))

    def log_eval(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.evals.write(row)
        self._track("eval", row, ("step", "epoch"))

    def close(self) -> None:
        """Close the CSV files and finish the trackers (not ``end_training``: that would also end the process
        group, which the export after training still uses)."""
        if not self.enabled:
            return
        self.steps.close()
        self.evals.close()
        for tracker in self.acc.trackers:
            tracker.finish()
        self.acc.trackers.clear()



def _column(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        try:
            y = float(r.get(key, ""))
        except ValueError:
            continue
        if math.isfinite(y):
            xs.append(float(r["step"]))
            ys.append(y)
    return xs, ys


def plot_curves(out: Path) -> list[Path]:
    """Write ``loss_curves.png`` (loss terms, lr by group) and ``eval_curves.png`` (validation metrics) from the CSVs."""
    plt = pyplot()

    written = []
    rows = _read_rows(out / STEPS_CSV)
    if rows:
        lr_keys = [k for k in rows[0] if k.startswith("lr_")]
        loss_keys = [k for k in ("total", "mask_ce", "mask_dice", "lm") if k in rows[0]]
        fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(12, 4))
        for key in loss_keys:
            ax_loss.plot(*_column(rows, key), label=key)
        ax_loss.set(xlabel="optimizer step", ylabel="loss", title="training losses")
        ax_loss.legend()
        for key in lr_keys:
            ax_lr.plot(*_column(rows, key), label=key[3:])
        ax_lr.set(xlabel="optimizer step", ylabel="learning rate", title="lr by group (0 = frozen, not drawn)")
        ax_lr.set_yscale("log", nonpositive="mask")  # groups span 1e-4 .. 1e-8
        ax_lr.legend()
        fig.tight_layout()
        path = out / "loss_curves.png"
        save_figure(fig, path, dpi=100)
        written.append(path)
    evals = _read_rows(out / EVAL_CSV)
    if evals:
        keys = [k for k in evals[0] if k not in ("step", "epoch", "n", "failures")]
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot(*_column(evals, key), marker="o", label=key)
        ax.set(xlabel="optimizer step", title="live validation")
        ax.legend()
        fig.tight_layout()
        path = out / "eval_curves.png"
        save_figure(fig, path, dpi=100)
        written.append(path)
    return written
