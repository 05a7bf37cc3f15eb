"""``ClassicalParams``: the classical segmenter's settings as one validated object, threaded to worker processes."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
from PIL import Image

import detecture
from detecture.benchmark.metrics import boundary_f, partition
from detecture.classical import ClassicalParams, load_params, segment_texture
from detecture.classical.params import parse_params
from detecture.cli import main
from detecture.commands.segment_classical import ClassicalJob, run_classical
from detecture.demo.examples import mosaic_two
from detecture.errors import InputError
from detecture.prompts import MAX_TEXTURES, Regime
from detecture.utils.parallel import one_thread


@pytest.fixture(scope="module")
def disc():
    """Brick disc on grass at 192 px (at 128 px the merge of a chosen K takes the two for one texture)."""
    return mosaic_two(192)[0]


def test_defaults_are_the_segmenters_defaults(disc):
    from skimage import data

    photo = data.astronaut()[::8, ::8]
    for image, k in ((disc, 2), (photo, 3)):
        np.testing.assert_array_equal(segment_texture(image, k, params=None),
                                      segment_texture(image, k, params=ClassicalParams()))


def test_a_changed_field_changes_the_result(disc):
    """Autonomous K on a two-texture mosaic: allowed two regions it finds them, capped at one it cannot."""
    assert segment_texture(disc, None, params=ClassicalParams(max_k=2)).shape[0] == 2
    assert segment_texture(disc, None, params=ClassicalParams(max_k=1)).shape[0] == 1


@pytest.mark.parametrize("field, value", [
    ("work_side", 0), ("pad", 0), ("frequencies", ()), ("frequencies", (0.1, 1.2)), ("frequencies", (0.7,)),
    ("bandwidth", -0.2), ("max_k", 2.5), ("cut_temperature", float("nan")), ("min_silhouette", 1.5), ("band", -1),
    ("luma_stat_weight", "x"), ("lbp_weight", -0.5), ("lbp_max_radius", 0), ("lbp_sigma", 0.0), ("recut_band", -3),
    ("recut_band", 2.5), ("palette_weight", -1.0), ("palette_weight", True),
])
def test_invalid_values_are_refused_naming_the_field(field, value):
    with pytest.raises(InputError, match=rf"ClassicalParams\.{field}="):
        ClassicalParams(**{field: value})


def test_max_k_is_at_most_the_regions_a_response_holds():
    """A larger max_k would segment every busy image, then fail to describe it: refused up front instead."""
    assert ClassicalParams(max_k=MAX_TEXTURES).max_k == MAX_TEXTURES
    with pytest.raises(InputError, match=rf"ClassicalParams\.max_k={MAX_TEXTURES + 1}: must be ≤ {MAX_TEXTURES}"):
        ClassicalParams(max_k=MAX_TEXTURES + 1)


@pytest.mark.parametrize("k", [None, 3, 6])
def test_the_smallest_fit_sample_still_fits_every_region(disc, k):
    """``fit_pixels`` is a total over K regions: 5 still gives each region the two pixels its class covariance needs,
    instead of one or none."""
    logits = segment_texture(disc, k, params=ClassicalParams(fit_pixels=5))
    assert logits.shape[1:] == disc.shape[:2] and np.isfinite(logits).all()


def test_a_small_fit_sample_never_caps_the_k_asked_for(disc):
    """The sample is at least K pixels: fewer would leave fewer regions than were asked for."""
    assert segment_texture(disc, 6, params=ClassicalParams(fit_pixels=3)).shape[0] == 6


def test_interior_zero_trains_pass_two_on_whole_regions():
    """``interior=0`` takes a pass-1 region's own pixels as its training pixels: pass 2 and the graph cut still place
    the boundaries (the cut's ±1 partition), closer to the true edge than pass 1 alone. (With one thread, as the
    service segments: k-means' threads spin against other work on a shared CPU, several seconds here.)"""
    image, gt = mosaic_two(192)
    with one_thread():
        logits = segment_texture(image, 2, params=ClassicalParams(interior=0))
        coarse = partition(segment_texture(image, 2, refine=False))
    assert set(np.unique(logits)) == {-1.0, 1.0}
    assert boundary_f(gt, partition(logits), tolerance=3) > boundary_f(gt, coarse, tolerance=3)


def test_params_are_frozen_and_list_frequencies_become_a_tuple():
    params = ClassicalParams(frequencies=[0.1, 0.2])
    assert params.frequencies == (0.1, 0.2) and hash(params) == hash(ClassicalParams(frequencies=(0.1, 0.2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.max_k = 3


def test_a_job_carries_its_params_to_the_worker(disc, tmp_path):
    path = tmp_path / "disc.png"
    Image.fromarray(disc).save(path)
    (tmp_path / "out").mkdir()
    job = ClassicalJob(0, path, tmp_path / "out" / "disc.detecture", Regime.autonomous(), {}, seed=0,
                       params=ClassicalParams(max_k=1))
    assert pickle.loads(pickle.dumps(job)) == job
    [(index, row, error)] = list(run_classical([job], 1))
    assert (index, error) == (0, None) and len(row["regions"]) == 1
    assert len(json.loads((tmp_path / "out" / "disc.detecture.json").read_text())["regions"]) == 1


def test_a_settings_file_is_read_with_yaml_numbers_and_any_subset_of_fields(tmp_path):
    path = tmp_path / "classical.yaml"
    path.write_text("max_k: 4\ncut_smoothness: 1e3  # YAML 1.1 reads this as a string\nfrequencies: [0.1, 5e-2]\n")
    assert load_params(path) == ClassicalParams(max_k=4, cut_smoothness=1000.0, frequencies=(0.1, 0.05))
    path.write_text("")
    assert load_params(path) == ClassicalParams()


@pytest.mark.parametrize("text, problem", [
    ("max_kk: 3", "max_kk: unknown key"),
    ("max_k: 2.5", "max_k: "),
    ("max_k: true", "max_k: expected a number"),
    ("cut_smoothness: fast", "cut_smoothness: "),
    ("max_k: 0", "max_k=0: must be ≥ 1"),
    ("[1, 2]", "expected a mapping"),
    ("max_k: [", "not valid YAML"),
    ("max_k: 3\nwork_side: 256\nmax_k: 4", "not valid YAML (line 3, column 1: key 'max_k' is given twice)"),
])
def test_a_bad_settings_file_is_one_line_naming_the_file_and_key(tmp_path, text, problem):
    path = tmp_path / "classical.yaml"
    path.write_text(text + "\n")
    with pytest.raises(InputError) as err:
        load_params(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_overrides_are_read_by_the_same_rules_as_a_file():
    assert parse_params({"band": 16}, "x.yaml", {"max_k": 4}) == ClassicalParams(band=16, max_k=4)
    with pytest.raises(InputError, match=r"^--set band: expected a number, got True$"):
        parse_params({}, "x.yaml", {"band": True})  # pydantic alone would read it as 1
    with pytest.raises(InputError, match=r"^x.yaml: max_k: expected a number, got False$"):
        parse_params({"max_k": False}, "x.yaml")


def test_segment_and_the_api_take_a_settings_file_and_a_changed_file_redoes_the_image(disc, tmp_path, capsys):
    image, config = tmp_path / "disc.png", tmp_path / "classical.yaml"
    Image.fromarray(disc).save(image)
    out = tmp_path / "out"
    command = ["segment", str(image), "--method", "classical", "--classical-config", str(config), "--workers", "1",
               "--out", str(out)]
    config.write_text("max_k: 1\n")
    assert main(command) == 0
    record = json.loads((out / "disc.detecture.json").read_text())
    assert len(record["regions"]) == 1 and record["settings"]["classical_params"]["max_k"] == 1
    assert main(command) == 0 and "already done with the same settings" in capsys.readouterr().out
    config.write_text("max_k: 2\n")
    assert main(command) == 0
    assert "1 output(s) made with other settings replaced" in capsys.readouterr().out  # redone, and said so
    assert len(json.loads((out / "disc.detecture.json").read_text())["regions"]) == 2
    assert detecture.segment(disc, k=None, classical_params=config).num_regions == 2
    assert detecture.segment(disc, k=None, classical_params=ClassicalParams(max_k=1)).num_regions == 1


def test_a_settings_file_for_another_method_or_a_bad_one_stops_before_any_image(tmp_path, capsys):
    config = tmp_path / "classical.yaml"
    config.write_text("max_k: 0\n")
    missing_image = str(tmp_path / "missing.png")
    assert main(["segment", missing_image, "--method", "classical", "--classical-config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {config}: ClassicalParams.max_k=0: must be ≥ 1"
    config.write_text("max_k: 2\n")
    assert main(["segment", missing_image, "--classical-config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == ("error: --classical-config applies to method 'classical' only, not "
                                               "to 'detecture'")
    with pytest.raises(InputError, match="ClassicalParams or the path"):
        detecture.segment(np.zeros((8, 8, 3), np.uint8), classical_params={"max_k": 2})


def test_bench_passes_a_settings_file_to_the_classical_method(tmp_path, capsys):
    from bench_fixture import make_unified

    config = tmp_path / "classical.yaml"
    config.write_text("max_k: 1\n")
    data = make_unified(tmp_path / "data", 2)
    base = ["bench", "--datasets", str(data), "--regime", "autonomous", "--classical-config", str(config)]
    assert main([*base, "--methods", "classical", "--out", str(tmp_path / "b")]) == 0
    cell = tmp_path / "b" / "cells" / "data" / "classical" / "samples.jsonl"
    rows = [json.loads(line) for line in cell.read_text().splitlines()]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["k_out"] == 1 for r in rows)
    assert main([*base, "--methods", "sam3", "--tiny", "--out", str(tmp_path / "c")]) == 2
    assert "--classical-config applies to method 'classical' only, not to 'sam3'" in capsys.readouterr().err


def test_bench_never_mixes_results_of_two_settings_in_one_cell(tmp_path, capsys):
    from bench_fixture import make_unified

    data, out, config = make_unified(tmp_path / "data", 2), tmp_path / "b", tmp_path / "classical.yaml"
    command = ["bench", "--datasets", str(data), "--methods", "classical", "--regime", "autonomous",
               "--classical-config", str(config), "--out", str(out)]
    config.write_text("max_k: 1\n")
    assert main(command) == 0
    samples = out / "cells" / "data" / "classical" / "samples.jsonl"
    first = samples.read_text()
    config.write_text("max_k: 2\n")
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: classical × data") and "max_k: 1 → 2" in err and "--force" in err
    assert samples.read_text() == first  # nothing was added
    oracle = [a for a in command if a not in ("--regime", "autonomous")] + ["--regime", "oracle"]
    config.write_text("max_k: 1\n")
    assert main(oracle) == 2 and "regime.kind: autonomous → oracle" in capsys.readouterr().err
    assert main(command) == 0 and samples.read_text() == first  # the same settings: complete, nothing redone
    config.write_text("max_k: 2\n")
    assert main([*command, "--force"]) == 0
    recorded = json.loads((samples.parent / "settings.json").read_text())
    assert recorded["method"]["classical_params"]["max_k"] == 2 and len(samples.read_text().splitlines()) == 2


def test_a_folder_given_as_the_settings_file_says_so(tmp_path):
    with pytest.raises(InputError, match=rf"^{tmp_path}: is a folder, expected a classical settings file$"):
        load_params(tmp_path)
