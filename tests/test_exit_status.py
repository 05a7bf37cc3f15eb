"""One exit-status convention (detecture/commands/exit_status.py): 0 done, 1 some items failed (count on the last
line), 2 nothing done (usage / input error before work started)."""

from __future__ import annotations

import json

from bench_fixture import make_unified
from detecture.cli import main
from detecture.commands.exit_status import OK, PARTIAL_FAILURE, USAGE_ERROR


def _last_line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_segment_partial_failure_and_usage_error(tmp_path, capsys):
    from PIL import Image

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (48, 40), (120, 80, 40)).save(good)
    bad.write_bytes(b"not an image")
    assert main(["segment", str(good), str(bad), "--tiny", "--k", "2", "--out", str(tmp_path / "o")]) == PARTIAL_FAILURE
    assert _last_line(capsys).startswith("1 image(s) segmented, 1 failed")
    assert main(["segment", str(tmp_path / "missing.png"), "--tiny", "--out", str(tmp_path / "o")]) == USAGE_ERROR


def test_train_counts_unreadable_samples_as_failures_not_filtered_ones(tmp_path):
    from detecture.data.metadata import load_metadata
    from detecture.training.dataset import scan

    root = make_unified(tmp_path / "data", 3)
    records = json.loads((root / "metadata.json").read_text())
    records[1]["image_path"] = "images/gone.png"  # missing file: a failure
    records[2]["textures"] *= 4  # 8 regions: filtered by data.max_regions, by design
    (root / "metadata.json").write_text(json.dumps(records))
    report = scan(root, load_metadata(root / "metadata.json"), max_regions=6)
    assert len(report.kept) == 1 and sum(report.skipped.values()) == 2 and report.unreadable == 1
