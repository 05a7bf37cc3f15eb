"""``detecture bench`` end to end on real-texture mosaics (RWTD layout): reports, skip/force, resume after SIGKILL."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench_fixture import make_rwtd
from detecture.cli import main

REPO = Path(__file__).resolve().parents[1]
HAS_PIPELINE = importlib.util.find_spec("detecture.pipeline") is not None


def _samples(out: Path, dataset: str, method: str) -> list[dict]:
    path = out / "cells" / dataset / method / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "finished")} for r in records]


@pytest.mark.skipif(not HAS_PIPELINE, reason="detecture.pipeline is not available yet")
def test_classical_and_tiny_detecture_text_end_to_end(tmp_path, capsys):
    make_rwtd(tmp_path / "data" / "rwtd", 4)
    out = tmp_path / "out"
    argv = ["bench", "--datasets", "rwtd", "--methods", "classical,detecture-text", "--tiny",
            "--data-root", str(tmp_path / "data"), "--out", str(out), "--gallery", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| rwtd | oracle K=2 | classical |" in printed

    for name in ("report.md", "report.csv", "report.tex", "gallery/rwtd.png"):
        assert (out / name).stat().st_size > 0, name
    for metric in ("miou", "panoptic_iou", "ari", "boundary_f", "k_correct"):
        with Image.open(out / "charts" / f"{metric}.png") as im:
            assert im.format == "PNG" and im.width > 100
    rows = {r["method"]: r for r in csv.DictReader((out / "report.csv").open())}
    assert set(rows) == {"classical", "detecture-text"}
    assert all(int(r["ok"]) == 4 and int(r["failed"]) == 0 for r in rows.values())
    # two real textures with a known split: the classical baseline must find it
    assert float(rows["classical"]["miou"]) > 0.8
    text = _samples(out, "rwtd", "detecture-text")
    assert len(text) == 4 and all(len(r["descriptions"]) == 2 for r in text)
    assert "\\begin{tabular}" in (out / "report.tex").read_text()

    # a finished cell is skipped (its results are untouched, also those beyond a smaller --limit) unless --force,
    # which with --limit redoes the samples inside the limit and keeps the others
    before = (out / "cells" / "rwtd" / "classical" / "samples.jsonl").read_text()
    classical = argv[:4] + ["classical"] + [a for a in argv[5:] if a != "--tiny"]  # --tiny serves no classical run
    assert main(classical + ["--limit", "2"]) == 0
    assert (out / "cells" / "rwtd" / "classical" / "samples.jsonl").read_text() == before
    old = _samples(out, "rwtd", "classical")
    assert main(classical + ["--force", "--limit", "2"]) == 0
    new = _samples(out, "rwtd", "classical")
    assert [r["id"] for r in new] == [r["id"] for r in old] and new[2:] == old[2:]
    assert all(n["finished"] > o["finished"] for n, o in zip(new[:2], old[:2]))


def test_failed_samples_are_counted_not_dropped(tmp_path, capsys):
    root = make_rwtd(tmp_path / "rwtd", 3)
    (root / "textures_mask" / "001_mask_b.png").unlink()
    out = tmp_path / "out"
    assert main(["bench", "--datasets", str(root), "--methods", "classical", "--out", str(out)]) == 1  # partial
    assert capsys.readouterr().out.strip().splitlines()[-1] == "2 of 3 sample(s) scored, 1 failed"
    row = next(csv.DictReader((out / "report.csv").open()))
    assert (row["ok"], row["failed"], row["missing"]) == ("2", "1", "0")
    failed = [r for r in _samples(out, "rwtd", "classical") if r["status"] == "failed"]
    assert len(failed) == 1 and "001_mask_b.png" in failed[0]["error"]
    assert "001_mask_b.png" in (out / "report.md").read_text()

    with Image.open(root / "textures_mask" / "001_mask_a.png") as mask_a:  # restore the missing complement
        Image.fromarray(255 - np.asarray(mask_a)).save(root / "textures_mask" / "001_mask_b.png")
    argv = ["bench", "--datasets", str(root), "--methods", "classical", "--out", str(out)]
    assert main(argv) == 0  # the failed sample's files changed since it was scored: it is scored again
    assert capsys.readouterr().out.strip().splitlines()[-1] == "3 of 3 sample(s) scored, 0 failed"
    row = next(csv.DictReader((out / "report.csv").open()))
    assert (row["ok"], row["failed"]) == ("3", "0")
    assert [r["id"] for r in _samples(out, "rwtd", "classical")] == ["000", "001", "002"]


def test_unreadable_result_lines_are_skipped_and_their_samples_redone(tmp_path, caplog):
    """A result line damaged on disk (bytes that are not UTF-8, broken JSON) is not a record: the cell reads the
    others and those samples count as not done."""
    from detecture.benchmark.cell_store import read_cell

    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "part-0.jsonl").write_bytes(b'{"id": "a", "miou": 1.0}\n\xff\xfe{"id": "b"}\n{"id": "c", \n'
                                        b'{"id": "d", "miou": 0.5}\n')
    assert sorted(read_cell(cell)) == ["a", "d"]
    assert caplog.text.count("ignoring an unreadable line") == 2


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    make_rwtd(data / "rwtd", 10)
    args = ["--datasets", "rwtd", "--methods", "classical", "--data-root", str(data), "--gallery", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "detecture", "bench", *args, "--out", str(killed)], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard = killed / "cells" / "rwtd" / "classical" / "part-0.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.exists() and shard.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = [json.loads(line) for line in shard.read_text().splitlines() if line.strip()]
    assert 2 <= len(partial) < 10 and not (killed / "report.md").exists()

    assert main(["bench", *args, "--out", str(killed)]) == 0  # the resume: in-process, only the kill needs a child
    assert main(["bench", *args, "--out", str(tmp_path / "straight")]) == 0

    got = _samples(killed, "rwtd", "classical")
    ids = [r["id"] for r in got]
    assert ids == [f"{i:03d}" for i in range(10)]  # none duplicated, none lost, dataset order
    assert _without_timing(got) == _without_timing(_samples(tmp_path / "straight", "rwtd", "classical"))
    for name in ("report.md", "report.csv", "report.tex"):
        assert (killed / name).read_text() == (tmp_path / "straight" / name).read_text()


def test_disk_full_while_recording_a_sample_names_the_results_file(tmp_path, monkeypatch, capsys):
    import errno

    from detecture.benchmark import cell_store

    flush = os.fsync

    def full(fd):  # only the results shard's disk is full: atomic writes (settings.json) flush too
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith("part-"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return flush(fd)

    root = make_rwtd(tmp_path / "rwtd", 1)
    monkeypatch.setattr(cell_store.os, "fsync", full)
    assert main(["bench", "--datasets", str(root), "--methods", "", "--predictions", f"p={root / 'textures_mask'}",
                 "--predictions-pattern", "{stem}_mask_a.png", "--out", str(tmp_path / "out")]) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    shard = tmp_path / "out" / "cells" / "rwtd" / "p" / "part-0.jsonl"
    assert last == f"error: {shard}: No space left on device; bench stopped unfinished (re-run the same command to " \
                   "finish it)"


def test_a_head_trained_on_tiny_backbones_is_refused_before_any_cell_runs(tmp_path, capsys):
    """Without --tiny such a head has no Qwen to load: one line asking for --tiny, before the classical cells run and
    minutes before the detecture method would fail to load a model called 'tiny'."""
    from detecture.pipeline import DetecturePipeline

    root = make_rwtd(tmp_path / "rwtd", n=2)
    head = DetecturePipeline.tiny().head.save_pretrained(tmp_path / "head")
    out = tmp_path / "out"
    argv = ["bench", "--datasets", str(root), "--methods", "classical,detecture", "--head", str(head),
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on tiny random backbones; add --tiny" in err[0], err
    assert not list(out.rglob("samples*.jsonl"))


def test_a_later_methods_model_missing_offline_is_refused_before_any_cell_runs(tmp_path, capsys, monkeypatch):
    """Offline, a model neither cached nor a local folder cannot load: one line (status 2, nothing done) before the
    classical cells run, instead of after them."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    root = make_rwtd(tmp_path / "rwtd", n=2)
    out = tmp_path / "out"
    argv = ["bench", "--datasets", str(root), "--methods", "classical,detecture-text", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'Qwen/Qwen3-VL-8B-Instruct' is not in the local cache" in err[0], err
    assert not list(out.rglob("samples*.jsonl")) and not list(out.rglob("part-*.jsonl"))


def test_a_finished_cell_is_reported_again_offline_once_its_model_is_gone(tmp_path, capsys, monkeypatch):
    """Its samples are all scored, so nothing loads: the model missing from the cache does not matter, until --force
    asks to score them again, which is refused before it deletes the results it would redo."""
    from huggingface_hub import constants

    from detecture.benchmark.methods.base import MethodOutput
    from detecture.benchmark.methods.sam3 import Sam3Method

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    model = tmp_path / "hub-cache" / "models--nobody--sam3"
    (model / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (model / "snapshots" / ("0" * 40) / "config.json").write_text("{}")
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(Sam3Method, "load", lambda self: None)
    monkeypatch.setattr(Sam3Method, "segment", lambda self, image, regime: MethodOutput(
        np.ones((1, *image.shape[:2]), np.float32), ["texture"]))
    root = make_rwtd(tmp_path / "rwtd", n=1)
    out = tmp_path / "out"
    argv = ["bench", "--datasets", str(root), "--methods", "sam3", "--sam3", "nobody/sam3", "--out", str(out),
            "--gallery", "0"]
    assert main(argv) == 0
    scored = _samples(out, "rwtd", "sam3")
    shutil.rmtree(model)
    capsys.readouterr()
    assert main(argv) == 0
    assert "| rwtd | oracle K=2 | sam3 |" in capsys.readouterr().out
    assert main(argv + ["--force"]) == 2
    assert "'nobody/sam3' is not in the local cache" in capsys.readouterr().err
    assert _samples(out, "rwtd", "sam3") == scored


@pytest.mark.skipif(not HAS_PIPELINE, reason="detecture.pipeline is not available yet")
def test_a_model_that_fails_to_load_after_other_cells_were_scored_stops_the_run_unfinished(tmp_path, capsys,
                                                                                         monkeypatch):
    """The classical cells are scored and kept by then: exit status 3 (stopped unfinished, a re-run finishes), not 2,
    which says that nothing was done; the re-run skips them."""
    from detecture.errors import ModelAccessError
    from detecture.pipeline import DetecturePipeline

    def gated(cls, *args, **kwargs):
        raise ModelAccessError("Qwen3-VL model 'x' is gated")

    root = make_rwtd(tmp_path / "rwtd", n=1)
    out = tmp_path / "out"
    argv = ["bench", "--datasets", str(root), "--methods", "classical,detecture-text", "--tiny", "--out", str(out),
            "--gallery", "0"]
    with monkeypatch.context() as patch:
        patch.setattr(DetecturePipeline, "tiny", classmethod(gated))
        assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: Qwen3-VL model 'x' is gated; bench stopped unfinished") and str(out) in err, err
    kept = _samples(out, "rwtd", "classical")
    assert [r["status"] for r in kept] == ["ok"]
    assert main(argv) == 0
    assert _samples(out, "rwtd", "classical") == kept
