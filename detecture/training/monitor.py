"""Training monitoring: a per-step CSV (the record of truth), the accelerator's trackers (TensorBoard), and
loss-curve PNGs at the end.

The CSV is append-only and flushed every row, so a killed run keeps its history; on resume rows past the checkpoint
(its step; for evaluation rows, the epochs it has finished) are dropped first, so the file reads as one uninterrupted
run. A run killed before its first checkpoint starts afresh when run again, and so do its logs (:func:`clear_logs`).
TensorBoard's events are rebuilt from the CSVs when a run starts: a kill loses the events its writer had not flushed
yet and leaves those of steps past the checkpoint, which the resumed run logs again.
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


def clear_logs(out: Path) -> None:
    """Delete the CSV logs of a run that stopped before its first checkpoint: training starts again from step 1, and
    appending would log its steps twice (the tracker's events are rebuilt from these CSVs, see :class:`Monitor`)."""
    stale = [path for path in (out / STEPS_CSV, out / EVAL_CSV) if path.exists()]
    for path in stale:
        path.unlink()
    if stale:
        log.info("starting afresh: removed %s of a run that stopped before its first checkpoint",
                 ", ".join(p.name for p in stale))


def _number(text: str) -> int | float | str:
    """A CSV cell as the number it was logged as (``""`` and words stay text, which the trackers skip)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


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
        if (self.out / tracker_run).is_dir():
            shutil.rmtree(self.out / tracker_run)
        accelerator.init_trackers(tracker_run)
        self._replay()

    def _replay(self) -> None:
        """Log the rows the CSVs already hold (those a resumed run keeps) to the freshly started trackers."""
        for row in _read_rows(self.steps.path):
            self._track_step({key: _number(value) for key, value in row.items()})
        for row in _read_rows(self.evals.path):
            self._track_eval({key: _number(value) for key, value in row.items()})

    def _track(self, prefix: str, row: dict[str, Any], skip: tuple[str, ...]) -> None:
        values = {f"{prefix}/{key}": value for key, value in row.items()
                  if key not in skip and isinstance(value, (int, float)) and math.isfinite(value)}
        self.acc.log(values, step=row["step"])

    def log_step(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.steps.write(row)
        self._track_step(row)

    def log_eval(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.evals.write(row)
        self._track_eval(row)

    def _track_step(self, row: dict[str, Any]) -> None:
        self._track("train", row, ("step",))

    def _track_eval(self, row: dict[str, Any]) -> None:
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
