"""Reports from recorded samples: means over the samples that ran, failures counted beside them, all three formats."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from bench_fixture import make_rwtd
from detecture.benchmark.gallery import colourise
from detecture.utils.image_ops import LABEL_COLOURS
from detecture.benchmark.tables import csv_text, latex, markdown, summarise
from detecture.benchmark.runner import BenchConfig, build_plan


def test_report_from_hand_written_records(tmp_path):
    root = make_rwtd(tmp_path / "rwtd", 4)
    config = BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)])
    _, _, cells = build_plan(config)
    cell_dir = tmp_path / "out" / "cells" / "rwtd" / "classical"
    cell_dir.mkdir(parents=True)
    values = [0.5, 0.75, 1.0]
    lines = [{"id": f"{i:03d}", "status": "ok", "miou": v, "panoptic_iou": v / 2, "ari": 0.0, "boundary_f": 1.0,
              "k_correct": float(i == 0), "warnings": ["empty mask x"] if i == 1 else []}
             for i, v in enumerate(values)]
    lines.append({"id": "003", "status": "failed", "error": "CUDA out of memory"})
    (cell_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))

    summary = summarise(cells, tmp_path / "out")[0]
    assert (summary.ok, summary.failed, summary.missing, summary.warned) == (3, 1, 0, 1)
    assert summary.metrics["miou"].mean == pytest.approx(np.mean(values))
    assert summary.metrics["panoptic_iou"].mean == pytest.approx(np.mean(values) / 2)
    assert summary.metrics["k_correct"].mean == pytest.approx(1 / 3)

    md = markdown([summary])
    assert "| rwtd | oracle K=2 | classical | 3 | 1 | 0 | 0.750 ±" in md
    assert "CUDA out of memory" in md and "1 samples with ground-truth masks that are no scored region" in md
    row = next(csv.DictReader(io.StringIO(csv_text([summary]))))
    assert float(row["miou"]) == pytest.approx(0.75) and row["failed"] == "1"
    assert float(row["miou_ci_low"]) <= 0.75 <= float(row["miou_ci_high"])
    assert "0.750 $\\pm$" in latex([summary])


def test_a_mask_under_an_earlier_one_is_not_reported_as_empty(tmp_path):
    """Every data warning was reported as "samples with empty ground-truth masks", also a mask that is not empty
    but lies entirely under an earlier one."""
    from bench_fixture import make_unified
    from detecture.benchmark.suite import run

    root = make_unified(tmp_path / "set", 2)
    metadata = json.loads((root / "metadata.json").read_text())
    metadata[0]["textures"].append(dict(metadata[0]["textures"][0], description="the first mask again"))
    (root / "metadata.json").write_text(json.dumps(metadata))
    run(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)], gallery=0))
    md = (tmp_path / "out" / "report.md").read_text()
    line = next(line for line in md.split("## Data warnings")[1].splitlines() if line.startswith("- classical"))
    assert "1 samples" in line and "empty" not in line


def test_gallery_colours_follow_the_matching():
    pred = np.array([[0, 1, 2, 3]])
    rgb = colourise(pred, {2: 1, 1: 2}, n_gt=2)  # pred 2 matched GT 1, pred 1 matched GT 2, pred 3 unmatched
    assert rgb[0].tolist() == [LABEL_COLOURS[k].tolist() for k in (0, 2, 1, 3)]


def test_the_gallery_draws_a_partition_only_beside_an_ok_result(tmp_path, monkeypatch):
    """An output folder may hold the partition of a sample whose result is now a failure: it is not drawn."""
    from detecture.benchmark import cell_store, gallery

    root = make_rwtd(tmp_path / "rwtd", 2)
    out = tmp_path / "out"
    _, _, cells = build_plan(BenchConfig(out=out, methods=["classical"], datasets=[str(root)]))
    cell_dir = out / "cells" / "rwtd" / "classical"
    cell_dir.mkdir(parents=True)
    lines = [{"id": "000", "status": "ok", "matches": [[1, 1, 1.0]]}, {"id": "001", "status": "failed", "error": "x"}]
    (cell_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    for sample_id in ("000", "001"):
        cell_store.save_partition(cells[0].partition_path(out, sample_id), np.ones((4, 4), np.uint8))
    drawn = []
    load = cell_store.load_partition
    monkeypatch.setattr(cell_store, "load_partition", lambda path: drawn.append(path.stem) or load(path))
    assert gallery.write_gallery(cells, out, 2).is_file()
    assert drawn == ["000"]


def test_report_names_each_failed_sample_with_its_error(tmp_path):
    """Users need to know which files to fix: every failed id with its one-line error, up to 20 per cell."""
    root = make_rwtd(tmp_path / "rwtd", 23)
    _, _, cells = build_plan(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)]))
    cell_dir = tmp_path / "out" / "cells" / "rwtd" / "classical"
    cell_dir.mkdir(parents=True)
    lines = [{"id": f"{i:03d}", "status": "failed", "error": f"images/{i:03d}.png: broken {i}"} for i in range(22)]
    lines.append({"id": "022", "status": "ok", "miou": 1.0, "panoptic_iou": 1.0, "ari": 1.0, "boundary_f": 1.0,
                  "k_correct": 1.0})
    (cell_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    md = markdown(summarise(cells, tmp_path / "out"))
    failures = md.split("## Failures")[1]
    for i in range(20):
        assert f"{i:03d}: images/{i:03d}.png: broken {i}\n" in failures
    assert "020:" not in failures and "and 2 more" in failures


def test_a_limited_run_says_in_every_report_how_many_samples_it_covers(tmp_path):
    """``--limit 2`` on a 5-sample dataset: the counts alone (2 ok, 0 failed, 0 missing) read as a full run."""
    from detecture.benchmark.suite import run

    root = make_rwtd(tmp_path / "rwtd", 5)
    out = tmp_path / "out"
    run(BenchConfig(out=out, methods=["classical"], datasets=[str(root)], limit=2, gallery=0))
    md = (out / "report.md").read_text()
    assert "- rwtd: first 2 of 5 samples (--limit)" in md
    row = next(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert (row["ok"], row["requested"], row["dataset_samples"], row["tiny_random_backbones"]) == ("2", "2", "5",
                                                                                                    "false")
    assert "first 2 of 5 samples (--limit)" in (out / "report.tex").read_text()

    run(BenchConfig(out=out, methods=["classical"], datasets=[str(root)], gallery=0))  # the whole dataset
    assert "--limit" not in (out / "report.md").read_text() and "--limit" not in (out / "report.tex").read_text()


def test_results_of_tiny_random_backbones_are_marked(tmp_path):
    """``--tiny`` numbers are plumbing checks: the row, a note, the CSV and the LaTeX table say so; a method that
    ignores ``--tiny`` (classical) is not marked."""
    from detecture.benchmark.methods import MethodOptions

    root = make_rwtd(tmp_path / "rwtd", 1)
    out = tmp_path / "out"
    config = BenchConfig(out=out, methods=["classical", "detecture-text"], datasets=[str(root)],
                         options=MethodOptions(tiny=True))
    _, _, cells = build_plan(config)
    record = {"id": "000", "status": "ok", "miou": 0.128, "panoptic_iou": 0.1, "ari": 0.0, "boundary_f": 0.0,
              "k_correct": 0.0}
    for method in ("classical", "detecture-text"):
        (out / "cells" / "rwtd" / method).mkdir(parents=True)
        (out / "cells" / "rwtd" / method / "samples.jsonl").write_text(json.dumps(record) + "\n")
    summaries = summarise(cells, out)

    md = markdown(summaries)
    assert "| rwtd | oracle K=2 | detecture-text (tiny random) | 1 |" in md
    assert "| rwtd | oracle K=2 | classical | 1 |" in md
    assert "- detecture-text: tiny random backbones (--tiny)" in md and "--limit" not in md
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(csv_text(summaries)))}
    assert rows["detecture-text"]["tiny_random_backbones"] == "true"
    assert rows["classical"]["tiny_random_backbones"] == "false"
    tex = latex(summaries)
    assert "detecture-text (tiny random)" in tex and "% NOT THE FULL BENCHMARK: detecture-text: tiny random" in tex
