"""``detecture bench --protocol published``: the published evaluator runs end to end beside ours, its results never
mixed with ours, and every report says which protocol produced it."""

from __future__ import annotations

import csv
import json

from bench_fixture import make_rwtd
from detecture.cli import main


def test_published_protocol_end_to_end_beside_ours(tmp_path, capsys):
    make_rwtd(tmp_path / "data" / "rwtd", 1)
    common = ["bench", "--datasets", "rwtd", "--methods", "classical", "--data-root",
              str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--gallery", "1"]
    assert main(common + ["--protocol", "published"]) == 0
    printed = capsys.readouterr().out
    assert "Protocol: published" in printed
    cells = tmp_path / "out" / "cells" / "rwtd"
    records = [json.loads(line) for line in (cells / "classical@published" / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 1 and all(r["status"] == "ok" and r["protocol"] == "published" for r in records)
    assert all(r["k_gt"] == 2 for r in records)
    row = next(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert row["protocol"] == "published"
    assert "published protocol" in (tmp_path / "out" / "report.tex").read_text()

    assert main(common) == 0  # ours, into the same folder: a separate cell, the published one untouched
    assert "Protocol: ours" in capsys.readouterr().out
    assert (cells / "classical" / "samples.jsonl").is_file()
    assert len((cells / "classical@published" / "samples.jsonl").read_text().splitlines()) == 1


def test_a_method_named_like_a_published_cell_has_its_own_folder():
    """'p@published' scored with our protocol and 'p' scored with the published one never share results."""
    from pathlib import Path

    from detecture.benchmark.cell_store import cell_dir, partition_path

    out = Path("out")
    assert cell_dir(out, "d", "p@published") != cell_dir(out, "d", "p", "published")
    assert partition_path(out, "d", "p@published", "ours", "0") != partition_path(out, "d", "p", "published", "0")


def test_the_gallery_of_a_published_run_shows_the_published_partitions(tmp_path, monkeypatch):
    from detecture.benchmark import cell_store
    from detecture.benchmark.runner import BenchConfig
    from detecture.benchmark.suite import run

    root = make_rwtd(tmp_path / "rwtd", 2)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(2):
        (pred / f"{i:03d}.png").write_bytes((root / "textures_mask" / f"{i:03d}_mask_a.png").read_bytes())
    read, real = [], cell_store.load_partition
    monkeypatch.setattr(cell_store, "load_partition", lambda path: read.append(path) or real(path))
    run(BenchConfig(out=tmp_path / "out", methods=[], datasets=[str(root)], predictions=[("p", str(pred))],
                    predictions_pattern="{id}.png", gallery=2, protocol="published"))
    assert len(read) == 2 and all(p.parent.name == "p@published" and p.is_file() for p in read)
