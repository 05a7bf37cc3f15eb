"""perf/bench_classical.py: the settings options, and ``sweep``, the command that chooses the classical settings.

The sweep scores each value on the tuning quarters only; here on two tiny unified sets of real-texture mosaics,
whose tuning quarter (every fourth sorted id) is their first mosaic.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench_fixture import make_unified
from detecture.classical import ClassicalParams

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "perf" / "bench_classical.py"


@pytest.fixture(scope="module")
def bench():
    """The script as a module; importing it sets one BLAS thread for its workers, which is undone for the suite."""
    saved = dict(os.environ)
    sys.path.insert(0, str(REPO / "perf"))
    try:
        yield importlib.import_module("bench_classical")
    finally:
        sys.path.remove(str(REPO / "perf"))
        os.environ.clear()
        os.environ.update(saved)


def run_script(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_settings_apply_the_file_then_each_set_and_name_what_changed(bench, tmp_path):
    config = tmp_path / "classical.yaml"
    config.write_text("band: 16\nmax_k: 4\n")
    params = bench.settings(str(config), ["max_k=5", "position_weight=0.6"])
    assert (params.band, params.max_k, params.position_weight) == (16, 5, 0.6)
    assert bench.changed(params) == "position_weight=0.6, band=16, max_k=5"
    assert bench.changed(bench.settings(None, [])) == "defaults"
    assert bench.settings(None, []) == ClassicalParams()


@pytest.mark.parametrize("argv, message", [
    (("sweep", "--vary", "band"), "--vary expects KEY=VALUE[,VALUE...], got 'band'"),
    (("sweep", "--vary", "bands=8,12"), "--vary bands: unknown key"),
    (("sweep", "--vary", "band=8,1.5"), "--vary band:"),
    (("sweep", "--vary", "frequencies=[0.1,0.2]"), "--vary frequencies: not a valid YAML value"),
    (("sweep", "--vary", "band=12,true"), "--vary band: expected a number, got True"),
    (("quality", "--set", "position_weight=false"), "--set position_weight: expected a number, got False"),
    (("quality", "--set", "band=-1"), "ClassicalParams.band=-1: must be ≥ 0"),
    (("speed", "--classical-config", "missing.yaml"), "missing.yaml: classical settings file not found"),
])
def test_bad_settings_stop_with_one_line_before_any_scoring(bench, argv, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    assert stopped.value.code == 2
    out = capsys.readouterr()
    assert message in out.err.splitlines()[-1]
    assert out.out == ""


def test_sweep_scores_each_value_on_the_tuning_quarters(tmp_path):
    dtd, outex = make_unified(tmp_path / "dtd", 4), make_unified(tmp_path / "outex", 4)
    out = run_script("sweep", "--vary", "band=6,12", "--set", "max_k=3", "--dtd", str(dtd), "--outex", str(outex),
                     "--workers", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "# bench_classical sweep of band on the tuning quarters (other settings: max_k=3)"
    rows = [line for line in lines if re.match(r"\| (\*\*)?\d", line)]
    assert [row.split(" | ")[0] for row in rows] == ["| 6", "| **12 (default)**"]
    for row in rows:
        cells = row.strip("| ").split(" | ")[1:]
        pairs = [tuple(float(x) for x in cell.split(" / ")) for cell in cells[:4]]
        assert all(0.0 <= x <= 1.0 for pair in pairs for x in pair)
        assert pairs[0][0] > 0.5  # two real textures, K given: the split is found
        assert re.fullmatch(r"\d\.\d{3} / K = [1-3]", cells[4])
        assert float(cells[5]) > 0
