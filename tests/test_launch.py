"""``segment``, ``mine`` and ``bench`` under ``accelerate launch`` on 2 CPU processes (gloo), and with ``--shard``.

Each process takes a disjoint share; the outputs equal a one-process run byte for byte; a rank stopped by a full disk
or killed mid-run leaves a state that one process resumes to the same outputs. Two launches serve every assertion
(each launch runs several commands, see launch_batch_worker.py), and the inputs are tiny.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

import miner_fixture as fx
from bench_fixture import make_rwtd
from detecture.cli import main

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(steps: list, log: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``steps`` on 2 ranks; return the process and, per step, the items each rank finished."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(TESTS / "launch_batch_worker.py"), json.dumps(steps), str(log)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    items: dict = defaultdict(lambda: defaultdict(list))
    lines = [line for rank in (0, 1) for line in log.with_name(f"{log.name}.{rank}").read_text().splitlines()]
    for line in lines:
        parts = line.split()
        if len(parts) == 4 and parts[0] in ("ITEM", "EXIT"):
            items[parts[2]][(parts[0], int(parts[1]))].append(parts[3])
    return done, items


def _files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(skip)}


def _bench_cell(out: Path) -> list[dict]:
    lines = (out / "cells" / "rwtd" / "classical" / "samples.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "finished")} for line in lines]


def _mine_outputs(out: Path) -> dict[str, bytes]:
    return _files(out, skip=("contact_sheet", "score_histogram", "run.json"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from detecture.demo.examples import mosaic_two

    root = tmp_path_factory.mktemp("launch")
    photos = root / "photos"
    photos.mkdir()
    for i in range(4):
        Image.fromarray(mosaic_two(88 + 8 * i)[0]).save(photos / f"m{i}.png")
    ade, _ = fx.build(root / "ade", with_textured=False)
    rwtd = make_rwtd(root / "rwtd", 4)
    argv = {
        "segment": lambda out: ["segment", str(photos), "--method", "classical", "--k", "2", "--workers", "1",
                                "--out", str(root / out)],
        "segment-tiny": lambda out: ["segment", str(photos / "m0.png"), str(photos / "m1.png"), "--tiny", "--k", "2",
                                     "--out", str(root / out)],
        "mine": lambda out: ["mine", "--root", str(ade), "--out", str(root / out), "--workers", "1"],
        "bench": lambda out: ["bench", "--datasets", str(rwtd), "--methods", "classical", "--gallery", "0",
                              "--out", str(root / out)],
    }
    first = _launch([["segment", argv["segment"]("segment2"), None],
                     ["segment-tiny", argv["segment-tiny"]("segment-tiny2"), None],
                     ["mine", argv["mine"]("mine2"), None],
                     ["bench", argv["bench"]("bench2"), None],
                     ["segment-full", argv["segment"]("segment-full"), ["full", 2]],
                     ["mine-kill", argv["mine"]("mine-kill"), ["kill", 2]]], root / "first.log")
    second = _launch([["bench-kill", argv["bench"]("bench-kill"), ["kill", 2]]], root / "second.log")
    for name in argv:  # the one-process references
        assert main(argv[name](name + "1")) == 0
    return root, argv, first, second


@pytest.mark.parametrize("name", ["segment", "segment-tiny", "mine", "bench"])
def test_two_processes_take_disjoint_shares_and_write_the_one_process_outputs(runs, name):
    root, _, (done, items), _ = runs
    assert items[name][("EXIT", 0)] == ["0"] and items[name][("EXIT", 1)] == ["0"], done.stderr[-3000:]
    share0, share1 = set(items[name][("ITEM", 0)]), set(items[name][("ITEM", 1)])
    assert share0 and share1 and not share0 & share1
    assert len(share0) + len(share1) == len(items[name][("ITEM", 0)]) + len(items[name][("ITEM", 1)])
    one, two = root / f"{name}1", root / f"{name}2"
    if name.startswith("segment"):
        assert share0 | share1 == {f"m{i}.png" for i in range(4 if name == "segment" else 2)}
        assert _files(two) == _files(one)
    elif name == "mine":
        assert share0 | share1 == {p.stem for p in (one / "mine_state" / "scenes").iterdir()}
        assert _mine_outputs(two) == _mine_outputs(one)
    else:
        assert share0 | share1 == {"000", "001", "002", "003"}
        assert _bench_cell(two) == _bench_cell(one)
        assert (two / "report.csv").read_text() == (one / "report.csv").read_text()


@pytest.mark.parametrize("name", ["segment-full", "mine-kill", "bench-kill"])
def test_a_rank_stopped_or_killed_mid_run_resumes_on_one_process(runs, name):
    root, argv, first, second = runs
    done, items = second if name == "bench-kill" else first
    command = name.split("-")[0]
    assert len(items[name][("ITEM", 1)]) == 1  # rank 1 finished one item, then the fault hit
    if command == "segment":
        assert items[name][("EXIT", 1)] == ["3"] and items[name][("EXIT", 0)] == ["0"]
    else:
        assert done.returncode != 0
    folder = root / name
    assert main(argv[command](folder.name)) == 0
    one = root / f"{command}1"
    if command == "segment":
        assert _files(folder) == _files(one)
    elif command == "mine":
        assert _mine_outputs(folder) == _mine_outputs(one)
    else:
        assert _bench_cell(folder) == _bench_cell(one)


def test_shards_of_a_job_array_then_the_merge_step_equal_one_run(runs, capsys):
    """``--shard I/N`` runs (no launcher) mine disjoint shares and assemble nothing; the same command without
    ``--shard`` finds every scene done and writes the merged dataset."""
    root, argv, _, _ = runs
    out = root / "mine-shards"
    for i in (1, 2, 3):
        assert main(argv["mine"](out.name) + ["--shard", f"{i}/3"]) == 0
        assert not (out / "metadata.json").exists()
    assert "share 3/3 mined" in capsys.readouterr().out
    assert main(argv["mine"](out.name)) == 0
    assert _mine_outputs(out) == _mine_outputs(root / "mine1")


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b"])
def test_bad_shard_is_one_error_line(text, tmp_path, capsys):
    assert main(["segment", str(tmp_path), "--method", "classical", "--shard", text]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --shard {text}:") and len(err.splitlines()) == 1


def test_shares_are_disjoint_contiguous_and_cover_every_item():
    from detecture.utils.parallel import Shard, share

    for n in (0, 1, 5, 16, 17):
        for k in (1, 2, 3, 8):
            blocks = [share(list(range(n)), Shard(i, k)) for i in range(k)]
            assert sum(blocks, []) == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert Shard.parse("2/4") == Shard(1, 4) and Shard.parse(None).whole
