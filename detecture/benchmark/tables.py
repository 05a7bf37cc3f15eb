"""Reports: Markdown, CSV and LaTeX tables plus one bar chart per metric, all from the cells' recorded samples.

Means are over the samples that ran; failed samples are counted in their own column (and missing ones — requested
but not recorded, e.g. after an interrupted run — in another). A method that fails on hard samples has a mean over
easier ones, so the count stands in every table beside the means, and the report lists each failure's error.
Two things make numbers unfit to quote, and every format says so: a run over the first N samples of a dataset only
(``--limit``), and a method run on tiny random backbones (``--tiny``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils import atomic
from ..utils.plotting import literal_text, pyplot, save_figure
from .metrics import Aggregate, bootstrap_mean
from .runner import Cell, cell_records, metric_values

FAILURES_LISTED = 20  # per cell in report.md; the cell's samples.jsonl holds every one

TABLE_METRICS = (
    ("miou", "mIoU"),
    ("panoptic_iou", "Panoptic IoU"),
    ("ari", "ARI"),
    ("boundary_f", "Boundary F"),
    ("k_correct", "K acc."),
)


@dataclass(frozen=True)
class CellSummary:
    method: str
    dataset: str
    regime: str
    requested: int
    ok: int
    failed: int
    metrics: dict[str, Aggregate]
    failures: tuple[tuple[str, str], ...]  # (sample id, error) of each failed sample, in dataset order
    warned: int
    dataset_size: int  # samples in the whole dataset (more than requested under --limit)
    random_backbones: bool  # run on tiny random backbones (--tiny): the numbers mean nothing
    protocol: str = "ours"

    @property
    def missing(self) -> int:
        return self.requested - self.ok - self.failed

    @property
    def limited(self) -> bool:
        """Whether the cell covers only the first ``requested`` samples of its dataset (``--limit``)."""
        return self.requested < self.dataset_size

    @property
    def method_label(self) -> str:
        """The method's name as the tables show it: results of random backbones are marked in the row itself, so a
        row copied out of the report keeps the mark."""
        return f"{self.method} (tiny random)" if self.random_backbones else self.method


def summarise(cells: list[Cell], out: Path) -> list[CellSummary]:
    """Aggregate each cell (bootstrap CIs are seeded, so the same results give the same report)."""
    summaries = []
    for cell in cells:
        records = cell_records(cell, out)
        failed = [r for r in records if r.get("status") != "ok"]
        metrics = {m: bootstrap_mean(metric_values(records, m)) for m, _ in TABLE_METRICS}
        summaries.append(
            CellSummary(
                method=cell.method.name,
                dataset=cell.dataset.name,
                regime=cell.regime.label(),
                requested=len(cell.records),
                ok=len(records) - len(failed),
                failed=len(failed),
                metrics=metrics,
                failures=tuple((str(r["id"]), str(r.get("error", ""))) for r in failed),
                warned=sum(1 for r in records if r.get("warnings")),
                dataset_size=len(cell.dataset.records),
                random_backbones=cell.method.random_backbones,
                protocol=cell.protocol,
            )
        )
    return summaries


PROTOCOL_NOTES = {
    "ours": "ours (each image at its own size; first GT mask wins an overlap; empty GT masks are not regions)",
    "published": "published (the paper's evaluator: 1008x1008 maps, GT resized nearest, last GT mask wins an overlap, "
                 "empty GT masks counted in K_gt, first 6 textures, -inf padding channels upsampled with their NaN "
                 "border; see detecture/benchmark/published_protocol.py)",
}


def _pm(agg: Aggregate, latex: bool = False) -> str:
    if math.isnan(agg.mean):
        return "–"
    half = (agg.high - agg.low) / 2
    return f"{agg.mean:.3f} $\\pm$ {half:.3f}" if latex else f"{agg.mean:.3f} ± {half:.3f}"


def caveats(summaries: list[CellSummary]) -> list[str]:
    """Lines saying which numbers cover part of a dataset or come from random backbones (empty when none do)."""
    lines = [f"{s.dataset}: first {s.requested} of {s.dataset_size} samples (--limit); its means are over those only"
             for s in {s.dataset: s for s in summaries if s.limited}.values()]
    tiny = list(dict.fromkeys(s.method for s in summaries if s.random_backbones))
    if tiny:
        lines.append(f"{', '.join(tiny)}: tiny random backbones (--tiny), a plumbing check; "
                     "their numbers say nothing about the method")
    return lines


def markdown(summaries: list[CellSummary]) -> str:
    head = ["Dataset", "Regime", "Method", "OK", "Failed", "Missing"] + [t for _, t in TABLE_METRICS]
    protocols = sorted({s.protocol for s in summaries}) or ["ours"]
    lines = [
        "# Detecture benchmark",
        "",
        f"Protocol: {', '.join(PROTOCOL_NOTES[p] for p in protocols)}",
        "",
    ]
    notes = caveats(summaries)
    if notes:
        lines += ["**Not the full benchmark:**", "", *[f"- {note}" for note in notes], ""]
    lines += [
        "Means over the samples that ran, ± half-width of the 95 % bootstrap confidence interval. mIoU is the mean",
        "IoU over Hungarian-matched pairs (published protocol); panoptic IoU divides the matched sum by",
        "max(K_pred, K_gt). Failed and missing samples are not in the means; they are counted beside them.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * len(head)) + "|",
    ]
    for s in summaries:
        row = [s.dataset, s.regime, s.method_label, str(s.ok), str(s.failed), str(s.missing)]
        lines.append("| " + " | ".join(row + [_pm(s.metrics[m]) for m, _ in TABLE_METRICS]) + " |")
    errors = [s for s in summaries if s.failed]
    if errors:
        lines += ["", "## Failures", ""]
        for s in errors:
            lines.append(f"- {s.method} × {s.dataset}: {s.failed} failed")
            lines += [f"  - {sample_id}: {error}" for sample_id, error in s.failures[:FAILURES_LISTED]]
            if s.failed > FAILURES_LISTED:
                lines.append(f"  - … and {s.failed - FAILURES_LISTED} more (all are in the cell's samples.jsonl)")
    warned = [s for s in summaries if s.warned]
    if warned:
        lines += ["", "## Data warnings", ""]
        lines += ["Ground-truth masks that are no region of the scored ground truth (empty, lying under earlier masks, "
                  "or left out by the published protocol), each named with why in its sample's warnings in the JSONL:",
                  ""]
        lines += [f"- {s.method} × {s.dataset}: {s.warned} samples with ground-truth masks that are no scored region"
                  for s in warned]
    return "\n".join(lines) + "\n"


def csv_text(summaries: list[CellSummary]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["protocol", "dataset", "regime", "method", "ok", "failed", "missing"]
    for m, _ in TABLE_METRICS:
        header += [m, f"{m}_ci_low", f"{m}_ci_high"]
    # appended after the metrics, so readers that take columns by position keep working
    header += ["requested", "dataset_samples", "tiny_random_backbones"]
    writer.writerow(header)
    for s in summaries:
        row: list[Any] = [s.protocol, s.dataset, s.regime, s.method, s.ok, s.failed, s.missing]
        for m, _ in TABLE_METRICS:
            a = s.metrics[m]
            row += [f"{a.mean:.6f}", f"{a.low:.6f}", f"{a.high:.6f}"]
        row += [s.requested, s.dataset_size, str(s.random_backbones).lower()]
        writer.writerow(row)
    return buf.getvalue()


def _tex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("&", "\\&"), ("%", "\\%"), ("#", "\\#")):
        text = text.replace(a, b)
    return text


def latex(summaries: list[CellSummary]) -> str:
    metrics = [(m, t) for m, t in TABLE_METRICS if m != "boundary_f"]
    protocols = sorted({s.protocol for s in summaries}) or ["ours"]
    lines = [
        f"% scored with the {' and '.join(protocols)} protocol (see report.md)",
        *[f"% NOT THE FULL BENCHMARK: {note}" for note in caveats(summaries)],
        "\\begin{tabular}{ll" + "r" * (1 + len(metrics)) + "}",
        "\\toprule",
        "Dataset & Method & Failed & " + " & ".join(t.replace("%", "\\%") for _, t in metrics) + " \\\\",
        "\\midrule",
    ]
    for s in summaries:
        cells = [_tex_escape(s.dataset), _tex_escape(s.method_label), str(s.failed)]
        lines.append(" & ".join(cells + [_pm(s.metrics[m], latex=True) for m, _ in metrics]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def bar_chart(summaries: list[CellSummary], metric: str, title: str, path: Path) -> None:
    """Grouped bars (datasets on the x axis, one bar per method) with the CI as error bars; dataset and method names
    are drawn as written, never as mathtext."""
    with literal_text():
        _bar_chart(summaries, metric, title, path)


def _bar_chart(summaries: list[CellSummary], metric: str, title: str, path: Path) -> None:
    plt = pyplot()
    import numpy as np

    datasets = list(dict.fromkeys(s.dataset for s in summaries))
    methods = list(dict.fromkeys(s.method for s in summaries))
    by_key = {(s.dataset, s.method): s.metrics[metric] for s in summaries}
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(datasets) + 1), 3.2), dpi=110)
    x = np.arange(len(datasets))
    for i, method in enumerate(methods):
        aggs = [by_key.get((d, method)) for d in datasets]
        means = [a.mean if a and not math.isnan(a.mean) else 0.0 for a in aggs]
        err = [
            [max(a.mean - a.low, 0.0) if a and not math.isnan(a.mean) else 0.0 for a in aggs],
            [max(a.high - a.mean, 0.0) if a and not math.isnan(a.mean) else 0.0 for a in aggs],
        ]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=method)
    ax.set_xticks(x, datasets)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(title)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=min(len(methods), 4), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    save_figure(fig, path)


def write_reports(summaries: list[CellSummary], out: Path) -> dict[str, Path]:
    """Write report.md / report.csv / report.tex and charts/<metric>.png; returns the paths by kind."""
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "latex": out / "report.tex"}
    atomic.write_text(paths["markdown"], markdown(summaries))
    atomic.write_text(paths["csv"], csv_text(summaries))
    atomic.write_text(paths["latex"], latex(summaries))
    for metric, title in TABLE_METRICS:
        path = out / "charts" / f"{metric}.png"
        bar_chart(summaries, metric, title, path)
        paths[f"chart:{metric}"] = path
    return paths
