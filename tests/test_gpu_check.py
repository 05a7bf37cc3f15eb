"""perf/gpu_check.sh: its CPU dry run writes every part's table, in the shape the device tool brings back.

A GPU machine is lent rarely and briefly, so the script must not fail there on a typo: the dry run runs every part
(the same scripts and code paths, test-sized random models) and this test checks what lands in ``$OUT``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "perf" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "perf"))

from gpu_check_report import log_results, pytest_table  # noqa: E402

PARTS = ("segment", "train", "fsdp", "suite")


def table_rows(markdown: str) -> list[list[str]]:
    """Data rows of every Markdown table in ``markdown`` (header and separator rows dropped)."""
    rows, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|[-:|]+\|?", line.replace(" ", "")):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|[-:|]+\|?", lines[i + 1].replace(" ", "")):
            continue  # a header row
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]  # split on pipes that are not escaped
        rows.append([c.strip() for c in cells])
    return rows


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    pytest.importorskip("bitsandbytes")  # the 4-bit stage-2 mode runs bitsandbytes' CPU kernels
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    return done, out


@pytest.mark.slow
def test_dry_run_writes_every_part_in_device_shape(dry_run):
    done, out = dry_run
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["machine.md", *(f"{p}.md" for p in PARTS), "gpu_check.md", "logs.txt"])
    # what the device tool brings back: at most 8 plain files, named in letters, digits, '.', '_', '-'
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files)
    combined = (out / "gpu_check.md").read_text()
    for part in PARTS:
        text = (out / f"{part}.md").read_text()
        assert "Result: ok" in text and table_rows(text), part
        assert text in combined
    status = {r[0]: r[1] for r in table_rows(combined) if r[0] in PARTS}
    assert status == {p: "ok" for p in PARTS}
    assert table_rows(done.stdout)  # the tables are printed too (the device reply carries the output's tail)


@pytest.mark.slow
def test_dry_run_tables_hold_every_configuration(dry_run):
    _, out = dry_run
    segment = table_rows((out / "segment.md").read_text())
    assert [(r[0], r[1]) for r in segment] == [("2", "1"), ("2", "2")]  # the dry run's --k 2 --batch 1 2
    for r in segment:
        seconds = [*r[2:9], r[10], r[11]]  # the stage times, s per image, images/s (r[9] is the cached/full %)
        assert all(float(c) >= 0 for c in seconds) and float(r[10]) > 0 and r[9].endswith("%"), r
    train = {r[0]: r for r in table_rows((out / "train.md").read_text())}
    assert set(train) == {"stage 1", "stage 1 cached", "stage 2", "stage 2 4-bit"}
    assert all(float(r[1]) > 0 for r in train.values()), train  # samples/s, no "failed" rows
    machine = dict((r[0], r[1]) for r in table_rows((out / "machine.md").read_text()))
    assert machine["torch"] and machine["transformers"] != "not installed"
    fsdp = dict((r[0], r[1]) for r in table_rows((out / "fsdp.md").read_text()))
    assert fsdp["failed"] == fsdp["error"] == "0"
    assert int(fsdp["skipped"]) + int(fsdp["passed"]) == 1  # skipped without CUDA, run with it


def test_unknown_part_is_one_error_line(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--parts", "segment,bogus"], env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("error:") and "bogus" in done.stderr
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_pytest_table_from_junit_and_from_a_cut_short_log(tmp_path):
    junit = tmp_path / "r.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_ok" time="0.1"/>'
        '<testcase classname="tests.test_a" name="test_bad" time="0.1"><failure message="assert 1 | 2 == 3">tb'
        '</failure></testcase>'
        '<testcase classname="tests.test_b" name="test_gpu" time="0"><skipped message="needs CUDA"/></testcase>'
        '<testcase classname="tests.test_b" name="test_gpu2" time="0"><skipped message="needs CUDA"/></testcase>'
        '<testcase time="0.000" />'  # what pytest leaves for the test a SIGINT stopped
        '</testsuite></testsuites>')
    rows = table_rows(pytest_table(junit, tmp_path / "unused.log"))
    assert ["passed", "1"] in rows and ["failed", "1"] in rows and ["skipped", "2"] in rows and ["error", "0"] in rows
    assert ["tests.test_a::test_bad", "failed", "assert 1 \\| 2 == 3"] in rows  # pipes escaped inside a cell
    assert ["needs CUDA", "2"] in rows
    log = tmp_path / "v.log"
    log.write_text("tests/test_a.py::test_ok PASSED     [ 50%]\n"
                   "tests/test_a.py::test_bad FAILED    [100%]\n"
                   "tests/test_b.py::test_gpu SKIPPED (needs CUDA) [100%]\nKeyboardInterrupt\n")
    assert [o for _, o, _ in log_results(log)] == ["passed", "failed", "skipped"]
    text = pytest_table(tmp_path / "missing.xml", log)
    assert "cut short" in text and ["failed", "1"] in table_rows(text)


def test_gpu_suite_leaves_out_exactly_what_the_fsdp_part_ran():
    """On the GPU the suite part runs every test but the one the fsdp part already ran; a ``-k`` naming no test
    would run that launch twice and spend the device's few minutes on it."""
    from _pytest.mark.expression import Expression

    text = SCRIPT.read_text()
    suite = re.search(r'SIZE=8b.*?SUITE_ARGS=\(tests -k "([^"]+)"\)', text, re.S).group(1)
    fsdp_file, fsdp = re.search(r'fsdp\)\n.*?(tests/\S+\.py) -k (\S+) ;;', text, re.S).groups()
    source = (REPO / fsdp_file).read_text()
    name = "test_launch_on_gpus_trains_exports_and_resumes"
    assert f"def {name}(" in source and '"config", ["ddp", "fsdp"]' in source

    def selected(expression: str, item: str) -> bool:  # pytest's -k: a name matches any part of the item's chain
        return Expression.compile(expression).evaluate(lambda word: any(word in part for part in
                                                                       ("tests", fsdp_file.split("/")[-1], item)))

    assert selected(fsdp, f"{name}[fsdp]") and not selected(fsdp, f"{name}[ddp]")
    assert not selected(suite, f"{name}[fsdp]")
    assert selected(suite, f"{name}[ddp]") and selected(suite, "test_dry_run_tables_hold_every_configuration")
