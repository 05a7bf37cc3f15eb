"""Run a benchmark end to end: cells (resumable), then — on the main process only — reports and galleries."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..utils.parallel import Ranks, stop_unfinished
from .gallery import write_gallery
from .tables import CellSummary, summarise, write_reports
from .runner import BenchConfig, run_benchmark, share_counts

log = logging.getLogger(__name__)


@dataclass
class BenchOutcome:
    summaries: list[CellSummary]
    files: dict[str, Path]


@dataclass
class ShareOutcome:
    """What a ``--shard`` run leaves: its share of every cell's samples, scored but neither merged nor reported."""

    requested: int
    ok: int
    failed: int


def run(config: BenchConfig) -> BenchOutcome | ShareOutcome | None:
    """Run all cells and write the reports (a ``--shard`` run: count its share's failures); returns ``None`` on a
    launched process other than the main one, which reports nothing."""
    with stop_unfinished("bench"):
        return _run(config, Ranks())


def _run(config: BenchConfig, ranks: Ranks) -> BenchOutcome | ShareOutcome | None:
    cells = run_benchmark(config, ranks)
    if not ranks.is_main:
        return None
    if not config.shard.whole:
        return ShareOutcome(*share_counts(cells, Path(config.out), config.shard))
    out = Path(config.out)
    summaries = summarise(cells, out)
    files = write_reports(summaries, out)
    for name in dict.fromkeys(c.dataset.name for c in cells):
        path = write_gallery([c for c in cells if c.dataset.name == name], out, config.gallery)
        if path is not None:
            files[f"gallery:{name}"] = path
    log.info("reports written to %s", out)
    return BenchOutcome(summaries, files)
