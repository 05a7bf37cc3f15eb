"""Benchmark datasets: unified and RWTD layouts, the datasets root, and bad input as one clear error (never a zero)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench_fixture import make_rwtd, make_unified, write_bomb_png
from detecture.benchmark.datasets import open_dataset
from detecture.benchmark.methods import MethodOptions, MethodOutput
from detecture.benchmark.regimes import SampleRegime
from detecture.benchmark.runner import BenchConfig, build_plan, run_sample
from detecture.cli import main
from detecture.errors import DatasetError


def test_unified_layout_found_by_name_under_env_root(tmp_path, monkeypatch):
    make_unified(tmp_path / "STLD", 3)
    monkeypatch.setenv("DETECTURE_DATASETS_ROOT", str(tmp_path))
    ds = open_dataset("stld")  # case-insensitive folder match
    assert ds.name == "STLD" and [r.id for r in ds.records] == ["m0", "m1", "m2"]
    sample, _, warnings = ds.load(ds.records[0])
    assert sample.image.shape == (96, 96, 3) and sample.masks.shape == (2, 96, 96) and warnings == []
    with pytest.raises(DatasetError, match="no folder of that name"):
        open_dataset("stld", data_root=tmp_path / "STLD")  # an explicit root wins over the environment


def test_a_dataset_not_found_by_name_points_to_where_to_get_it(tmp_path, monkeypatch):
    """A bare `detecture bench --out x` reads the four default datasets under ./datasets: without them the error says
    where the docs tell how to get them, and that section exists."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DETECTURE_DATASETS_ROOT", raising=False)
    with pytest.raises(DatasetError, match="datasets root datasets does not exist") as missing_root:
        open_dataset("rwtd")
    (tmp_path / "datasets").mkdir()
    with pytest.raises(DatasetError, match="no folder of that name") as missing_folder:
        open_dataset("rwtd")
    for error in (missing_root, missing_folder):
        assert "'Getting the datasets' in docs/benchmark.md" in str(error.value)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmark.md").read_text(encoding="utf-8")
    assert "**Getting the datasets.**" in docs


def test_rwtd_native_layout(tmp_path):
    make_rwtd(tmp_path / "rwtd", 2)
    ds = open_dataset(str(tmp_path / "rwtd"))
    assert [r.id for r in ds.records] == ["000", "001"]
    assert [t.mask_path for t in ds.records[1].textures] == ["textures_mask/001_mask_a.png",
                                                             "textures_mask/001_mask_b.png"]
    sample, _, _ = ds.load(ds.records[0])
    assert np.array_equal(sample.masks[0], ~sample.masks[1])


def test_rwtd_images_sharing_a_stem_are_refused_naming_both(tmp_path, capsys):
    """images/000.jpg beside images/000.png: both would be sample '000' with the same masks, counted twice."""
    root = make_rwtd(tmp_path / "rwtd", 2)
    Image.open(root / "images" / "000.png").save(root / "images" / "000.jpg")
    line = _cli_error(capsys, ["bench", "--datasets", str(root), "--methods", "classical", "--out",
                               str(tmp_path / "out")])
    assert line.startswith(f"error: {root / 'images'}: ") and "000.jpg and 000.png" in line and "'000'" in line
    assert not (tmp_path / "out" / "cells").exists()


def test_masks_are_binarised_above_127_and_empty_masks_reported(tmp_path):
    root = make_unified(tmp_path / "set", 1)
    Image.fromarray(np.full((96, 96), 127, np.uint8)).save(root / "masks" / "m0_b.png")  # 127 is "out": empty
    mask_a = np.zeros((96, 96), np.uint8)
    mask_a[:, :10] = 128
    Image.fromarray(mask_a).save(root / "masks" / "m0_a.png")
    ds = open_dataset(str(root))
    sample, _, warnings = ds.load(ds.records[0])
    assert sample.masks[0].sum() == 96 * 10 and not sample.masks[1].any()
    assert warnings == ["empty mask masks/m0_b.png"]


@pytest.mark.parametrize("protocol, k_gt, warned, unwarned", [
    ("ours", 1, ["masks/m0_b.png lies entirely under earlier masks", "empty mask masks/m0_c.png"], []),
    ("published", 3, ["empty mask masks/m0_c.png, counted in K_gt"], ["earlier masks", "m0_b.png"]),
])
def test_an_oracle_method_is_told_the_k_gt_of_the_protocol_that_scores_it(tmp_path, caplog, protocol, k_gt, warned,
                                                                          unwarned):
    """Masks: a covers the image, b lies under it, c is empty. Ours (the first mask wins, an empty mask is no region)
    has one region; the published protocol (the last mask wins, every one of the first 6 masks counts) has three.
    Under each, the K the method is told is the K_gt its scorer records, and the warnings describe that scorer."""
    root = make_unified(tmp_path / "set", 1)
    Image.fromarray(np.full((96, 96), 255, np.uint8)).save(root / "masks" / "m0_a.png")
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(root / "masks" / "m0_c.png")
    meta = json.loads((root / "metadata.json").read_text())
    meta[0]["textures"].append({"description": "Texture of nothing", "mask_path": "masks/m0_c.png"})
    (root / "metadata.json").write_text(json.dumps(meta))
    _, _, cells = build_plan(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)],
                                         protocol=protocol))
    told = []

    def whole_image(image: np.ndarray, regime: SampleRegime) -> MethodOutput:
        told.append(regime.k)
        return MethodOutput(np.full((1, *image.shape[:2]), 5.0, np.float32))

    cells[0].method.segment = whole_image
    with caplog.at_level(logging.WARNING):
        rec = run_sample(cells[0], cells[0].records[0], tmp_path / "out", save_partition=False)
    assert rec["status"] == "ok" and rec["protocol"] == protocol
    assert told == [rec["k_gt"]] == [k_gt]
    if protocol == "ours":  # one region told, one region answered: a perfect score
        assert rec["miou"] == 1.0
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(w in logged for w in warned) and not any(w in logged for w in unwarned)
    assert rec["warnings"] and all(any(w in x for x in rec["warnings"]) for w in warned)


@pytest.mark.parametrize("protocol", ["ours", "published"])
def test_a_sample_builds_its_ground_truth_once(tmp_path, monkeypatch, protocol):
    """The warnings, the K an oracle is told and the score read one label map: building it per use costs a 1008²
    resize of every mask under the published protocol."""
    from detecture.benchmark import metrics, published_protocol, scoring

    root = make_unified(tmp_path / "set", 1)
    _, _, cells = build_plan(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)],
                                         protocol=protocol))
    cells[0].method.segment = lambda image, regime: MethodOutput(np.full((1, *image.shape[:2]), 5.0, np.float32))
    builds = []

    def counted(build):
        def spy(*args, **kwargs):
            builds.append(build.__name__)
            return build(*args, **kwargs)
        return spy

    ours, published = counted(metrics.gt_label_map), counted(published_protocol.published_gt)
    for module, name, spy in ((metrics, "gt_label_map", ours), (scoring, "gt_label_map", ours),
                              (published_protocol, "published_gt", published)):
        monkeypatch.setattr(module, name, spy, raising=False)  # scoring may not import it
    rec = run_sample(cells[0], cells[0].records[0], tmp_path / "out", save_partition=False)
    assert rec["status"] == "ok"
    assert builds == ["published_gt" if protocol == "published" else "gt_label_map"]


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_path_traversal_is_one_clear_error(tmp_path, capsys):
    root = make_unified(tmp_path / "evil", 2)
    (tmp_path / "secret.png").write_bytes((root / "masks" / "m0_a.png").read_bytes())
    records = json.loads((root / "metadata.json").read_text())
    records[1]["textures"][0]["mask_path"] = "../secret.png"
    (root / "metadata.json").write_text(json.dumps(records))
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        open_dataset(str(root))
    line = _cli_error(capsys, ["bench", "--datasets", str(root), "--methods", "classical", "--out",
                               str(tmp_path / "out")])
    assert "../secret.png" in line and "escapes" in line
    assert not (tmp_path / "out" / "cells").exists()  # nothing ran


def test_missing_folder_and_bad_schema_are_clear_errors(tmp_path, capsys):
    line = _cli_error(capsys, ["bench", "--datasets", "rwtd", "--data-root", str(tmp_path), "--out",
                               str(tmp_path / "out")])
    assert "rwtd" in line and str(tmp_path) in line
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.json").write_text(json.dumps({"id": "x"}))
    line = _cli_error(capsys, ["bench", "--datasets", "broken", "--data-root", str(tmp_path), "--out",
                               str(tmp_path / "out")])
    assert "metadata.json" in line and "list" in line
    (tmp_path / "empty").mkdir()
    line = _cli_error(capsys, ["bench", "--datasets", "empty", "--data-root", str(tmp_path), "--out",
                               str(tmp_path / "out")])
    assert "textures_mask" in line


def test_mask_size_mismatch_is_a_recorded_failure_naming_the_file(tmp_path):
    root = make_unified(tmp_path / "set", 2)
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(root / "masks" / "m1_a.png")
    config = BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)],
                         options=MethodOptions())
    _, _, cells = build_plan(config)
    rec = run_sample(cells[0], cells[0].records[1], tmp_path / "out", save_partition=False)
    assert rec["status"] == "failed"
    assert "m1_a.png" in rec["error"] and "60x50" in rec["error"]


@pytest.mark.parametrize("fault", ["symlink loop", "deep nesting"])
def test_broken_metadata_is_one_line_before_anything_runs(tmp_path, capsys, fault):
    root = make_unified(tmp_path / "set", 2)
    if fault == "symlink loop":
        (root / "masks" / "l1").symlink_to("l2")
        (root / "masks" / "l2").symlink_to("l1")
        records = json.loads((root / "metadata.json").read_text())
        records[1]["textures"][0]["mask_path"] = "masks/l1"
        (root / "metadata.json").write_text(json.dumps(records))
    else:
        (root / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    line = _cli_error(capsys, ["bench", "--datasets", str(root), "--methods", "classical", "--out",
                               str(tmp_path / "out")])
    assert str(root / "metadata.json") in line
    if fault == "symlink loop":
        assert "record 'm1'" in line and "masks/l1" in line and "symlink loop" in line
    assert not (tmp_path / "out" / "cells").exists()


def test_rwtd_layout_errors_name_the_file_not_a_missing_metadata_json(tmp_path, capsys):
    root = make_rwtd(tmp_path / "rwtd", 2)
    outside = make_rwtd(tmp_path / "elsewhere", 1)
    (root / "images" / "001.png").unlink()
    (root / "images" / "001.png").symlink_to(outside / "images" / "000.png")
    line = _cli_error(capsys, ["bench", "--datasets", str(root), "--methods", "classical", "--out",
                               str(tmp_path / "out")])
    assert line.startswith(f"error: {root / 'images' / '001.png'}: ") and "escapes" in line
    assert "metadata.json" not in line


def test_a_file_given_as_dataset_says_so(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    line = _cli_error(capsys, ["bench", "--datasets", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out")])
    assert "notes.txt" in line and "is a file" in line


def test_bad_files_are_recorded_as_failed_samples_and_the_run_finishes(tmp_path, capsys):
    """A name too long for the file system and decompression bombs (image, mask or prediction) are faults of the
    input: each is its sample's one-line failure, never "stopped unfinished", so a re-run does not redo them."""
    root = make_unified(tmp_path / "set", 5)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(5):
        Image.open(root / "masks" / f"m{i}_a.png").save(pred / f"m{i}.png")
    write_bomb_png(pred / "m0.png")
    records = json.loads((root / "metadata.json").read_text())
    records[1]["image_path"] = "images/" + "x" * 300 + ".png"
    (root / "metadata.json").write_text(json.dumps(records))
    write_bomb_png(root / "images" / "m2.png")
    write_bomb_png(root / "masks" / "m3_b.png")
    argv = ["bench", "--datasets", str(root), "--methods", "", "--predictions", f"p={pred}",
            "--predictions-pattern", "{id}.png", "--out", str(tmp_path / "out")]
    for _ in range(2):
        assert main(argv) == 1  # partial: some samples failed
        captured = capsys.readouterr()
        assert "stopped unfinished" not in captured.err
        assert captured.out.strip().splitlines()[-1] == "1 of 5 sample(s) scored, 4 failed"
    samples = [json.loads(line) for line in (tmp_path / "out" / "cells" / "set" / "p" / "samples.jsonl").open()]
    errors = {r["id"]: r.get("error", "") for r in samples}
    assert "m0.png" in errors["m0"] and "decompression bomb" in errors["m0"]
    assert "x" * 300 in errors["m1"] and "File name too long" in errors["m1"]
    assert "m2.png" in errors["m2"] and "decompression bomb" in errors["m2"]
    assert "m3_b.png" in errors["m3"] and "decompression bomb" in errors["m3"]
    assert errors["m4"] == "" and samples[-1]["status"] == "ok"


def test_two_datasets_with_one_folder_name_are_refused_before_anything_runs(tmp_path, capsys):
    """They would share one result cell: the second's numbers would be the first's."""
    a, b = make_rwtd(tmp_path / "a" / "ds", 1), make_rwtd(tmp_path / "b" / "ds", 1)
    out = tmp_path / "out"
    line = _cli_error(capsys, ["bench", "--datasets", f"{a},{b}", "--methods", "classical", "--out", str(out)])
    assert str(a) in line and str(b) in line and "share the result folder 'ds'" in line
    line = _cli_error(capsys, ["bench", "--datasets", f"{a},{a}", "--methods", "classical", "--out", str(out)])
    assert f"dataset {a} is given twice" in line
    assert not (out / "cells").exists()


@pytest.mark.parametrize("spec, within", [(".", ""), ("..", "images"), ("./", "")])
def test_a_dataset_given_as_dot_is_named_after_its_folder_and_gets_its_regime(tmp_path, monkeypatch, spec, within):
    """``--datasets .`` named the dataset "" and so skipped the regime its folder's name selects (Outex: K = 5)."""
    root = make_unified(tmp_path / "outex", 2)
    by_path = build_plan(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)]))[2][0]
    monkeypatch.chdir(root / within)
    cell = build_plan(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[spec]))[2][0]
    assert cell.dataset.name == "outex" and cell.regime == by_path.regime


def test_a_dataset_reached_through_a_symbolic_link_is_named_after_the_link(tmp_path):
    """A link is how a folder gets the name that selects its regime (and how two folders of one name are told
    apart): ``datasets/outex -> outex_v2_fixed`` is Outex, scored at K = 5."""
    target = make_unified(tmp_path / "outex_v2_fixed", 2)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "outex").symlink_to(target, target_is_directory=True)
    cell = build_plan(BenchConfig(out=tmp_path / "o2", methods=["classical"],
                                  datasets=[str(tmp_path / "datasets" / "outex")]))[2][0]
    assert cell.dataset.name == "outex" and cell.regime.k == 5
