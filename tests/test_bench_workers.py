"""``bench --workers N``: the classical method's samples scored in worker processes record what one process records,
a run stopped midway resumes without redoing a sample, and the option is refused where no method can use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from bench_fixture import make_rwtd
from detecture.benchmark import cell_store
from detecture.benchmark.runner import BenchConfig, run_benchmark
from detecture.cli import main

SAMPLES = 5
TIMING = ("seconds", "finished")  # what differs between two runs of the same samples


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Small mosaics, one of them with a mask of the wrong size (a data error: a failed sample)."""
    root = make_rwtd(tmp_path_factory.mktemp("workers") / "rwtd", SAMPLES, size=48)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "textures_mask" / "003_mask_a.png")
    return root


@pytest.fixture(scope="module")
def one_process(dataset) -> Path:
    out = dataset.parent / "one"
    run_benchmark(_config(dataset, out))
    return out


def _config(dataset: Path, out: Path, workers: int = 1) -> BenchConfig:
    return BenchConfig(out=out, methods=["classical"], datasets=[str(dataset)], gallery=2, workers=workers)


def _records(out: Path) -> list[dict]:
    lines = (out / "cells" / "rwtd" / "classical" / cell_store.MERGED).read_text().splitlines()
    return [json.loads(line) for line in lines]


def _untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _partitions(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "partitions").rglob("*")) if p.is_file()}


def _forkserver_children() -> list[psutil.Process]:
    """The worker processes this test process started (forked by its forkserver)."""
    return [child for proc in psutil.Process().children() if "forkserver" in " ".join(proc.cmdline())
            for child in proc.children()]


def test_workers_record_what_one_process_records(dataset, one_process, tmp_path):
    out = tmp_path / "workers"
    run_benchmark(_config(dataset, out, workers=2))
    records = _records(out)
    assert [r["id"] for r in records] == [f"{i:03d}" for i in range(SAMPLES)]
    assert records[3]["status"] == "failed" and "003_mask_a.png" in records[3]["error"]
    assert _untimed(records) == _untimed(_records(one_process))
    assert _partitions(out) == _partitions(one_process) and len(_partitions(out)) == 2


def test_a_run_with_workers_interrupted_midway_resumes_without_redoing_a_sample(dataset, one_process, tmp_path,
                                                                               monkeypatch):
    """Ctrl+C between two results: the workers stop at once, the results recorded so far stay, and a re-run with
    workers scores only the others."""
    out = tmp_path / "stopped"
    real_write = cell_store.ShardWriter.write
    written: list[str] = []
    workers: list[psutil.Process] = []

    def write(self, record: dict) -> None:
        workers.extend(_forkserver_children() if not workers else [])
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(record["id"])
        real_write(self, record)

    monkeypatch.setattr(cell_store.ShardWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_config(dataset, out, workers=2))
    assert len(workers) == 2
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    kept = cell_store.read_cell(out / "cells" / "rwtd" / "classical")
    assert sorted(kept) == sorted(written)

    monkeypatch.setattr(cell_store.ShardWriter, "write", real_write)
    run_benchmark(_config(dataset, out, workers=2))
    records = _records(out)
    assert all(r == kept[r["id"]] for r in records if r["id"] in kept)  # not scored again: the same record
    assert _untimed(records) == _untimed(_records(one_process))
    assert _partitions(out) == _partitions(one_process)


def test_the_command_line_hands_workers_to_the_run(tmp_path, monkeypatch):
    from detecture.benchmark import suite

    configs: list[BenchConfig] = []
    monkeypatch.setattr(suite, "run", lambda config: configs.append(config))  # None: as a launched non-main process
    assert main(["bench", "--datasets", "rwtd", "--methods", "classical", "--workers", "3", "--out",
                 str(tmp_path / "out")]) == 0
    assert [c.workers for c in configs] == [3]


@pytest.mark.parametrize("extra, message", [
    (["--methods", "detecture", "--workers", "2"], "--workers applies to method 'classical' only, not to 'detecture'"),
    (["--methods", "classical", "--predictions", "p=preds", "--workers", "0"], "--workers must be at least 1"),
    (["--methods", ",", "--predictions", "p=preds", "--workers", "2"],
     "--workers applies to method 'classical' only, not to 'predictions'"),
    (["--methods", ",", "--workers", "2"], "--workers applies to method 'classical' only, and no method is selected"),
])
def test_workers_are_refused_with_one_line_before_anything_runs(tmp_path, capsys, extra, message):
    root = make_rwtd(tmp_path / "rwtd", 1)
    out = tmp_path / "out"
    assert main(["bench", "--datasets", str(root), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not out.exists()


def test_the_command_line_refuses_workers_for_exactly_the_methods_that_cannot_use_them():
    from detecture.benchmark.methods import WORKER_METHODS
    from detecture.benchmark.model_keys import option_readers

    assert tuple(option_readers("workers")) == WORKER_METHODS
