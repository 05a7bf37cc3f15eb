"""Methods behind one interface: dispatch-table checks, regime handling and the offline-checkable parts of each."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from bench_fixture import make_unified, mosaic
from detecture.benchmark import cell_store
from detecture.benchmark.methods import MODEL_KEYS, REGISTRY, MethodOptions, build_method
from detecture.benchmark.methods.base import MethodOutput
from detecture.benchmark.methods.predictions import PredictionsMethod
from detecture.benchmark.methods.sam3 import instances_to_logits
from detecture.benchmark.metrics import gt_label_map, partition, score_labels
from detecture.benchmark.model_keys import TINY_METHODS
from detecture.benchmark.regimes import (
    AUTONOMOUS,
    DISPATCH,
    ORACLE,
    REGIMES,
    RegimeSpec,
    SampleRegime,
    check_plan,
    parse_regime,
    regime_for,
)
from detecture.benchmark.runner import BenchConfig, build_plan, run_benchmark
from detecture.errors import DatasetError, DetectureError, InputError, MethodError, NotServed


def test_dispatch_table_covers_every_method_and_regime():
    kinds = {spec.kind for spec in REGIMES.values()}
    for method in list(REGISTRY) + ["predictions"]:
        for kind in kinds | {ORACLE, AUTONOMOUS}:
            assert (method, kind) in DISPATCH


def test_regime_takes_the_words_of_segment_k():
    """``segment --k`` takes ``auto`` or ``N``; bench's --regime accepts the same for the same regimes."""
    assert parse_regime("auto") == parse_regime("AUTO ") == RegimeSpec(AUTONOMOUS)
    assert parse_regime("3") == parse_regime("oracle:3") == RegimeSpec(ORACLE, 3)


def test_missing_dispatch_pair_fails_before_any_model_loads():
    with pytest.raises(InputError, match="new-method × rwtd"):
        check_plan([("classical", "rwtd", REGIMES["rwtd"]), ("new-method", "rwtd", REGIMES["rwtd"])])
    with pytest.raises(InputError, match="unknown method"):
        build_method("nope", MethodOptions())


def test_regime_option_parsing():
    assert parse_regime("oracle:3") == RegimeSpec(ORACLE, 3)
    assert parse_regime("autonomous") == RegimeSpec(AUTONOMOUS)
    assert parse_regime("oracle") == RegimeSpec(ORACLE, None)
    for bad in ("oracle:9", "oracle:x", "0", "7", "-1", "autonom", "k3"):
        with pytest.raises(InputError, match="--regime"):
            parse_regime(bad)
    assert regime_for("RWTD") == RegimeSpec(ORACLE, 2)  # the table's protocol for a known set
    assert regime_for("outex", RegimeSpec(AUTONOMOUS)) == RegimeSpec(AUTONOMOUS)  # an explicit --regime wins
    assert regime_for("my_set", RegimeSpec(AUTONOMOUS)) == RegimeSpec(AUTONOMOUS)
    assert regime_for("my_set") == RegimeSpec(ORACLE, None)  # default: oracle K_gt


def test_explicit_regime_wins_over_the_table_in_the_plan(tmp_path):
    """`bench --datasets outex --regime autonomous` runs Outex autonomously (the table says oracle K = 5)."""
    outex = make_unified(tmp_path / "outex", 1)
    plan = lambda regime: build_plan(BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(outex)],
                                                 regime=regime))[2]
    assert [c.regime for c in plan(None)] == [RegimeSpec(ORACLE, 5)]
    cells = plan(RegimeSpec(AUTONOMOUS))
    assert [(c.regime, c.mode) for c in cells] == [(RegimeSpec(AUTONOMOUS), "open-k")]


def test_sam3_instances_to_logits_per_mode():
    masks = np.full((3, 4, 6), -1.0, dtype=np.float32)
    masks[0, :, :2] = 2.0  # score 0.2
    masks[1, :, 2:] = 2.0  # score 0.9 (best)
    masks[2, :2, :] = 2.0  # score 0.5
    scores = np.array([0.2, 0.9, 0.5])
    one = partition(instances_to_logits(masks, scores, 1, "single-prompt"))
    assert np.array_equal(one == 1, masks[1] > 0) and set(np.unique(one)) == {0, 1}
    two = partition(instances_to_logits(masks, scores, 2, "single-prompt"))  # inverse-mask trick: exact split
    assert np.array_equal(two == 1, masks[1] > 0) and np.array_equal(two == 2, masks[1] <= 0)
    three = instances_to_logits(masks, scores, 3, "top-k-gt")
    assert three.shape == (3, 4, 6) and np.array_equal(three[1] > 0, masks[2] > 0)  # ranked by score
    padded = instances_to_logits(masks[:1], scores[:1], 3, "top-k-gt")
    assert (padded[1:] == -1e4).all()


def test_sam3_method_on_tiny_random_sam3():
    method = build_method("sam3", MethodOptions(tiny=True))
    method.load()
    image, _ = mosaic(0, 64)
    try:
        k2 = method.segment(image, SampleRegime(ORACLE, 2, 2, "single-prompt"))
        assert k2.logits.shape == (2, 64, 64)
        labels = partition(k2.logits)
        assert set(np.unique(labels)) <= {1, 2}  # two-way split: nothing unassigned
        k1 = method.segment(image, SampleRegime(ORACLE, 1, 1, "single-prompt"))
        assert k1.logits.shape == (1, 64, 64)
        auto = method.segment(image, SampleRegime(AUTONOMOUS, None, 4, "top-k-gt"))
        assert auto.logits.shape == (4, 64, 64)  # the top-K_gt concession
        with pytest.raises(InputError):
            method.segment(image, SampleRegime(AUTONOMOUS, None, 4, "open-k"))
    finally:
        method.close()
    assert method.loaded == {}


def test_weight_methods_fail_clearly_without_permission_or_weights():
    with pytest.raises(InputError, match="--trust-remote-code"):
        build_method("sa2va", MethodOptions()).check()
    with pytest.raises(InputError, match="--model texturesam="):
        build_method("texturesam", MethodOptions()).check()
    with pytest.raises(DetectureError, match="--head"):
        build_method("detecture", MethodOptions()).check()
    build_method("detecture", MethodOptions(tiny=True)).check()


def test_a_misspelt_model_key_is_refused_before_anything_runs_naming_the_keys(tmp_path, capsys):
    """``grounding_dino`` for ``grounding-dino`` was ignored: the method loaded its default detector instead."""
    from detecture.cli import main

    root = make_unified(tmp_path / "set", 1)
    out = tmp_path / "out"
    argv = ["bench", "--datasets", str(root), "--methods", "grounding-sam3", "--out", str(out)]
    assert main([*argv, "--model", "grounding_dino=/my/detector"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grounding_dino" in err[0] and "grounding-dino" in err[0], err
    assert not (out / "cells").exists()


def test_a_model_key_no_selected_method_reads_is_refused_by_the_run_itself(tmp_path):
    """Refused, as the command refuses every option no selected method reads: a user who gave --qwen believes that
    Qwen was scored (a caller of the library, without the command, is refused too)."""
    root = make_unified(tmp_path / "set", 1)
    config = BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)], gallery=0,
                         options=MethodOptions(models={"qwen": "other/qwen"}))
    with pytest.raises(NotServed, match="^--qwen applies to methods 'detecture' and 'detecture-text' only, not to "
                                        "'classical'$"):
        build_plan(config)
    assert not (tmp_path / "out").exists()


def test_a_misspelt_method_is_named_as_such_before_the_options_it_would_not_read(tmp_path, capsys):
    """``--methods detectur --head ckpt`` is a typo, not a run that no option serves."""
    from detecture.cli import main

    root = make_unified(tmp_path / "set", 1)
    assert main(["bench", "--datasets", str(root), "--methods", "detectur", "--head", "ckpt", "--out",
                 str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown method 'detectur'; available: ")


@pytest.mark.parametrize("option, methods, readers", [
    (["--tiny"], "classical", "methods 'detecture', 'detecture-text' and 'sam3'"),
    (["--head", "ckpt"], "classical,detecture-text", "method 'detecture'"),
    (["--device", "cuda:3"], "classical", "methods 'detecture', 'detecture-text', 'sam3', 'grounding-sam3', "
                                          "'texturesam' and 'sa2va'"),
    (["--prompt", "bark"], "classical,detecture", "methods 'sam3' and 'grounding-sam3'"),
    (["--trust-remote-code"], "classical,sam3", "method 'sa2va'"),
    (["--qwen", "my/qwen"], "sam3", "methods 'detecture' and 'detecture-text'"),
    (["--sam3", "my/sam3"], "classical", "methods 'detecture', 'detecture-text', 'sam3' and 'grounding-sam3'"),
    (["--model", "grounding-dino=my/dino"], "sam3", "method 'grounding-sam3'"),
    (["--model", "texturesam=my/sam2"], "classical", "method 'texturesam'"),
    (["--model", "sa2va=my/sa2va"], "classical", "method 'sa2va'"),
    (["--predictions-pattern", "seg{stem}.png"], "classical", "method 'predictions'"),
    (["--classical-config", "c.yaml"], "sam3", "method 'classical'"),
])
def test_an_option_no_selected_method_reads_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys, option,
                                                                              methods, readers):
    """An option for another method is refused, not ignored (docs/conventions.md): ``--methods
    classical,detecture-text --head ckpt`` would score no head while the user believes theirs was."""
    from detecture.cli import main

    monkeypatch.setattr("detecture.benchmark.methods.build_method", lambda *a: pytest.fail("a method was built"))
    root = make_unified(tmp_path / "set", 1)
    out = tmp_path / "out"
    assert main(["bench", "--datasets", str(root), "--methods", methods, "--out", str(out), *option]) == 2
    named = option[0] if option[0] != "--model" else f"--model {option[1].partition('=')[0]}"
    listed = ", ".join(f"'{m}'" for m in methods.split(","))
    assert capsys.readouterr().err == f"error: {named} applies to {readers} only, not to {listed}\n"
    assert not out.exists()


@pytest.mark.parametrize("option, methods", [
    (["--tiny"], "classical,sam3"),
    (["--head", "ckpt"], "classical,detecture"),
    (["--device", "cpu"], "classical,texturesam"),
    (["--prompt", "bark"], "classical,grounding-sam3"),
    (["--trust-remote-code"], "classical,sa2va"),
    (["--qwen", "my/qwen"], "classical,detecture-text"),
    (["--sam3", "my/sam3"], "classical,grounding-sam3"),
    (["--model", "texturesam=my/sam2"], "classical,texturesam"),
    (["--classical-config", "c.yaml"], "classical,sam3"),
])
def test_an_option_one_selected_method_reads_is_accepted(monkeypatch, option, methods):
    """One reader among the selected methods is enough: the others need not read it."""
    from detecture.benchmark import suite
    from detecture.cli import main

    configs = []
    monkeypatch.setattr(suite, "run", lambda config: configs.append(config))
    monkeypatch.setattr("detecture.classical.load_params", lambda path: None)
    assert main(["bench", "--methods", methods, "--out", "unused", *option]) == 0
    assert len(configs) == 1


def _bench_models(argv: list[str], monkeypatch) -> dict[str, str]:
    """The model ids ``detecture bench argv`` hands its methods (the run itself stubbed out)."""
    from detecture.benchmark import suite
    from detecture.cli import main

    configs = []
    monkeypatch.setattr(suite, "run", lambda config: configs.append(config))
    assert main(["bench", "--methods", "detecture,grounding-sam3", "--out", "unused", *argv]) == 0
    return configs[0].options.models


@pytest.mark.parametrize("options, same_as", [
    (["--qwen", "my/qwen"], ["--model", "qwen=my/qwen"]),
    (["--sam3", "my/sam3"], ["--model", "sam3=my/sam3"]),
    (["--qwen", "my/qwen", "--model", "qwen=my/qwen", "--model", "grounding-dino=my/dino"],
     ["--model", "qwen=my/qwen", "--model", "grounding-dino=my/dino"]),
])
def test_qwen_and_sam3_options_name_the_models_as_model_keys_do(monkeypatch, options, same_as):
    """--qwen and --sam3, the names segment, demo, train, mine and convert give those models, mean exactly
    --model qwen= and sam3=."""
    assert _bench_models(options, monkeypatch) == _bench_models(same_as, monkeypatch)


@pytest.mark.parametrize("argv, models", [
    (["--methods", "sam3,grounding-sam3", "--sam3", "my/sam3"], {"sam3": "my/sam3"}),
    (["--methods", "detecture-text,sa2va", "--model", "sa2va=my/sa2va", "--trust-remote-code"], {"sa2va": "my/sa2va"}),
])
def test_tiny_keeps_what_a_method_without_tiny_backbones_reads(monkeypatch, argv, models):
    """--tiny swaps the backbones of its methods only (model_keys.TINY_METHODS): a model, --device or
    --trust-remote-code that another selected method reads still loads, so it is passed on, not refused."""
    from detecture.benchmark import suite
    from detecture.cli import main

    configs = []
    monkeypatch.setattr(suite, "run", lambda config: configs.append(config))
    assert main(["bench", "--tiny", "--device", "cpu", "--out", "unused", *argv]) == 0
    assert (configs[0].options.models, configs[0].options.device, configs[0].options.tiny) == (models, "cpu", True)


def test_a_model_named_by_its_option_and_by_model_differently_is_refused(monkeypatch, capsys):
    from detecture.cli import main

    monkeypatch.setattr("detecture.benchmark.suite.run", lambda config: pytest.fail("the run started"))
    assert main(["bench", "--methods", "detecture", "--out", "unused", "--sam3", "a/sam3", "--model",
                 "sam3=b/sam3"]) == 2
    assert capsys.readouterr().err == ("error: --sam3 a/sam3 and --model sam3=b/sam3 give two values for the SAM3 "
                                       "model; give one\n")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_method_reads_the_model_keys_listed_for_it_and_no_other(name):
    """The list of keys refuses every other key, so a key a method reads must be in it, and one it does not read
    must not be (it would be accepted for that method and silently ignored)."""
    keys = sorted({key for listed in MODEL_KEYS.values() for key in listed})
    base = build_method(name, MethodOptions()).settings()
    changes = {key: build_method(name, MethodOptions(models={key: "some/other-model"})).settings() != base
               for key in keys}
    assert changes == {key: key in MODEL_KEYS[name] for key in keys}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_tiny_replaces_the_models_of_the_methods_listed_for_it_and_no_other(name):
    """bench refuses with --tiny a model or --device that only the listed methods would read, so a listed method
    must load none of its models then, and any other must load them as it does without --tiny."""
    plain, tiny = (build_method(name, MethodOptions(tiny=flag, models={"texturesam": "some/sam2"})).models()
                   for flag in (False, True))
    assert (tiny == {} and plain != {}) if name in TINY_METHODS else tiny == plain


def test_prerequisites_are_checked_before_any_method_runs(tmp_path):
    """``classical`` comes first, but sa2va's missing permission stops the run before classical loads."""
    root = make_unified(tmp_path / "set", 1)
    config = BenchConfig(out=tmp_path / "out", methods=["classical", "sa2va"], datasets=[str(root)])
    with pytest.raises(InputError, match="--trust-remote-code"):
        run_benchmark(config)
    assert not (tmp_path / "out" / "cells").exists()


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_predictions_method_reads_label_maps(tmp_path):
    labels = np.zeros((8, 10), np.uint8)
    labels[:, 4:] = 7
    labels[6:, :] = 200
    Image.fromarray(labels).save(tmp_path / "segabc.png")
    method = PredictionsMethod(MethodOptions(), "peer", tmp_path, "seg{stem}.png")
    out = method.segment(np.zeros((8, 10, 3), np.uint8), SampleRegime(ORACLE, 3, 3, "precomputed", "r1", "abc"))
    assert out.logits.shape == (3, 8, 10)
    s = score_labels(labels, partition(out.logits))  # the same partition up to renaming
    assert s.miou == 1.0 and s.ari == 1.0
    with pytest.raises(DatasetError, match="12x8"):
        method.segment(np.zeros((8, 12, 3), np.uint8), SampleRegime(ORACLE, 3, 3, "precomputed", "r1", "abc"))
    with pytest.raises(DatasetError, match="not found"):
        method.segment(np.zeros((8, 10, 3), np.uint8), SampleRegime(ORACLE, 3, 3, "precomputed", "r2"))
    with pytest.raises(InputError, match="not found"):
        PredictionsMethod(MethodOptions(), "peer", tmp_path / "nope")


def test_classical_segments_a_real_texture_mosaic():
    method = build_method("classical", MethodOptions())
    image, mask = mosaic(0, 128)  # brick | grass
    gt = gt_label_map(np.stack([mask, ~mask]))
    out = method.segment(image, SampleRegime(ORACLE, 2, 2, "given-k"))
    assert out.logits.shape == (2, 128, 128)
    assert score_labels(gt, partition(out.logits)).miou > 0.8
    flat = method.segment(np.full((64, 64, 3), 90, np.uint8), SampleRegime(AUTONOMOUS, None, 2, "open-k"))
    assert len(np.unique(partition(flat.logits))) == 1  # a textureless image is one region
    auto = method.segment(image, SampleRegime(AUTONOMOUS, None, 2, "open-k"))
    assert 1 <= auto.logits.shape[0] <= 6


def test_texturesam_calls_the_generator_with_texture_settings_and_keeps_largest_masks():
    calls = []
    h, w = 20, 30
    small, large, medium = (np.zeros((h, w), bool) for _ in range(3))
    small[:2, :2], large[:, 10:], medium[:10, :10] = True, True, True

    def generator(image, **kwargs):
        calls.append(kwargs)
        return {"masks": [small, large, medium], "scores": [0.9, 0.8, 0.7]}

    method = build_method("texturesam", MethodOptions(models={"texturesam": "ckpt"}))
    method.loaded["generator"] = generator
    image = np.zeros((h, w, 3), np.uint8)
    two = method.segment(image, SampleRegime(ORACLE, 2, 2, "largest-k"))
    assert calls[0]["points_per_crop"] == 64 and calls[0]["stability_score_thresh"] == 0.2
    assert np.array_equal(two.logits[0] > 0, large) and np.array_equal(two.logits[1] > 0, medium)
    assert method.segment(image, SampleRegime(ORACLE, 5, 5, "largest-k")).logits.shape[0] == 5  # padded
    assert method.segment(image, SampleRegime(AUTONOMOUS, None, 2, "all-masks")).logits.shape[0] == 3


def test_grounding_box_selection_per_mode():
    from detecture.benchmark.methods.grounding_sam3 import select_boxes

    boxes = np.arange(32, dtype=float).reshape(8, 4)
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.8, 0.2, 0.7, 0.6])
    assert select_boxes(boxes, scores, "top-k-boxes", 2).tolist() == [boxes[1].tolist(), boxes[4].tolist()]
    assert len(select_boxes(boxes, scores, "detector-boxes", None)) == 6
    assert select_boxes(np.zeros((0, 4)), np.zeros(0), "top-k-boxes", 2).shape == (0, 4)


def test_sa2va_prompt_and_mask_handling():
    class FakeSa2VA:
        def predict_forward(self, image, text, tokenizer):
            self.text = text
            m = np.zeros((1, 6, 8), bool)
            m[0, :, :4] = True
            return {"prediction": "brick [SEG]\ngrass [SEG]", "prediction_masks": [m, ~m, m]}

    method = build_method("sa2va", MethodOptions(trust_remote_code=True))
    fake = FakeSa2VA()
    method.loaded.update(model=fake, tokenizer=None)
    out = method.segment(np.zeros((6, 8, 3), np.uint8), SampleRegime(ORACLE, 2, 2, "given-k"))
    assert "exactly 2" in fake.text and out.logits.shape == (2, 6, 8)
    assert set(np.unique(partition(out.logits))) == {1, 2}
    method.segment(np.zeros((6, 8, 3), np.uint8), SampleRegime(AUTONOMOUS, None, 2, "open-k"))
    assert "between 1 and 6" in fake.text


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_states_its_settings_as_json_and_a_changed_option_changes_them(name):
    """The runner records these with each cell and refuses to mix results of two settings; a method whose outputs
    depend on an option must show it there."""
    import json

    base = build_method(name, MethodOptions(models={"texturesam": "ckpt-a"}))
    json.dumps(base.settings())
    changed = {"classical": MethodOptions(seed=1), "detecture-text": MethodOptions(models={"qwen": "other/qwen"}),
               "sam3": MethodOptions(prompt="bark"), "grounding-sam3": MethodOptions(prompt="bark"),
               "texturesam": MethodOptions(models={"texturesam": "ckpt-b"}),
               "sa2va": MethodOptions(models={"sa2va": "other/sa2va"}), "detecture": MethodOptions(tiny=True)}
    assert build_method(name, changed[name]).settings() != base.settings()


def test_a_head_retrained_into_its_folder_changes_the_detecture_settings(tmp_path):
    """Recorded by path only, a head retrained in place let a re-run add its scores to the old head's cell."""
    head = tmp_path / "head"
    head.mkdir()
    (head / "config.json").write_text("{}")
    (head / "model.safetensors").write_bytes(b"old weights")
    settings = build_method("detecture", MethodOptions(head=str(head))).settings
    before = settings()
    (head / "model.safetensors").write_bytes(b"old weights")  # written again, same bytes: the same experiment
    assert settings() == before
    (head / "model.safetensors").write_bytes(b"retrained weights")
    assert settings() != before and settings()["head"] == before["head"]


def test_a_cell_scored_before_head_files_were_recorded_is_continued(tmp_path):
    """Cells scored before the head's files were recorded lack the key: that is no other head, so the cell is
    continued (and records the key from then on), while a recorded value that differs is still a change."""
    head = tmp_path / "head"
    head.mkdir()
    (head / "config.json").write_text("{}")
    (head / "model.safetensors").write_bytes(b"weights")
    settings = {"regime": {"kind": "oracle", "k": None},
                "method": build_method("detecture", MethodOptions(head=str(head))).settings()}
    older = {"regime": settings["regime"], "method": {k: v for k, v in settings["method"].items() if k != "head_files"}}
    cell_store.write_settings(tmp_path / "cell", older)
    assert cell_store.settings_change(tmp_path / "cell", settings) is None
    other = {"regime": settings["regime"], "method": {**settings["method"], "head_files": "0" * 16}}
    cell_store.write_settings(tmp_path / "cell", other)
    assert "method.head_files" in cell_store.settings_change(tmp_path / "cell", settings)
    newer_seed = {"regime": settings["regime"], "method": {**older["method"], "seed": 7}}
    cell_store.write_settings(tmp_path / "cell", newer_seed)  # another key missing or changed is still a change
    assert "method.seed" in cell_store.settings_change(tmp_path / "cell", settings)


@pytest.mark.parametrize("name", ["sam3", "detecture-text"])
def test_the_seed_of_tiny_random_weights_is_a_setting(name):
    """Under --tiny the seed draws the weights, so it decides the outputs; with real weights it does not."""
    tiny = [build_method(name, MethodOptions(tiny=True, seed=seed)).settings() for seed in (0, 1)]
    real = [build_method(name, MethodOptions(seed=seed)).settings() for seed in (0, 1)]
    assert tiny[0] != tiny[1] and real[0] == real[1]


def _with_predictions(tmp_path, n: int):
    """A unified set of ``n`` mosaics and a folder of their ground truth as label maps named ``<id>.png``."""
    root = make_unified(tmp_path / "set", n)
    pred = tmp_path / "pred"
    pred.mkdir()
    for i in range(n):
        Image.open(root / "masks" / f"m{i}_a.png").save(pred / f"m{i}.png")
    return root, pred


def _samples(out, dataset: str, method: str) -> dict[str, dict]:
    lines = (out / "cells" / dataset / method / "samples.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_a_label_map_with_more_levels_than_a_partition_holds_is_one_failed_sample(tmp_path):
    root, pred = _with_predictions(tmp_path, 2)
    Image.fromarray((np.arange(96 * 96) % 256).astype(np.uint8).reshape(96, 96)).save(pred / "m0.png")
    out = tmp_path / "out"
    run_benchmark(BenchConfig(out=out, methods=[], datasets=[str(root)], predictions=[("p", str(pred))],
                              predictions_pattern="{id}.png"))
    samples = _samples(out, "set", "p")
    assert samples["m0"]["status"] == "failed" and samples["m1"]["status"] == "ok"
    assert str(pred / "m0.png") in samples["m0"]["error"] and "256 regions; at most 254" in samples["m0"]["error"]
    with pytest.raises(MethodError, match="255 regions"):
        MethodOutput(np.zeros((255, 2, 2), np.float32))  # any method: one rule for every output


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_colour_label_map_has_one_region_per_colour_even_where_two_share_a_grey_level(tmp_path, mode):
    """(255, 0, 0) and (0, 130, 0) are both grey level 76: read as grey, the two regions would be one."""
    truth = np.zeros((8, 10), np.uint8)
    truth[:, 5:] = 1
    truth[6:, :] = 2
    colours = np.array([[255, 0, 0, 255], [0, 130, 0, 255], [0, 0, 255, 255]], np.uint8)[:, : len(mode)]
    colour_map = Image.fromarray(colours[truth], mode)
    assert len(np.unique(np.asarray(colour_map.convert("L")))) == 2
    colour_map.save(tmp_path / "r1.png")
    method = PredictionsMethod(MethodOptions(), "peer", tmp_path, "{id}.png")
    out = method.segment(np.zeros((8, 10, 3), np.uint8), SampleRegime(ORACLE, 3, 3, "precomputed", "r1"))
    assert out.logits.shape == (3, 8, 10) and score_labels(truth + 1, partition(out.logits)).miou == 1.0


@pytest.mark.parametrize("pattern, problem", [
    ("seg{stem}{.png", "malformed"), ("seg{stem}{foo}.png", "{foo} is not allowed"),
    ("{id!r}.png", "{id!r} is not allowed"), ("{stem:>9}.png", "{stem:>9} is not allowed"), ("{}.png", "{} is not"),
    ("seg.png", "must contain"), ("/tmp/{id}.png", "absolute"), ("../{id}.png", "escapes the predictions folder")])
def test_a_bad_predictions_pattern_is_one_line_before_anything_runs(tmp_path, capsys, pattern, problem):
    from detecture.cli import main

    root, pred = _with_predictions(tmp_path, 1)
    out = tmp_path / "out"
    assert main(["bench", "--datasets", str(root), "--methods", "classical", "--predictions", f"p={pred}",
                 "--predictions-pattern", pattern, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: predictions 'p': pattern") and problem in err[0], err
    assert not (out / "cells").exists()  # classical, named first, did not run


def test_a_pattern_naming_one_file_for_two_records_is_refused_before_anything_runs(tmp_path):
    """images/a/x.png and images/b/x.png have one stem: under '{stem}.png' both samples would read pred/x.png."""
    root, pred = _with_predictions(tmp_path, 2)
    records = json.loads((root / "metadata.json").read_text())
    for record, folder in zip(records, ("a", "b")):
        (root / "images" / folder).mkdir()
        (root / record["image_path"]).rename(root / "images" / folder / "x.png")
        record["image_path"] = f"images/{folder}/x.png"
    (root / "metadata.json").write_text(json.dumps(records))
    config = BenchConfig(out=tmp_path / "out", methods=["classical"], datasets=[str(root)],
                         predictions=[("p", str(pred))])
    with pytest.raises(InputError) as refused:
        build_plan(config)
    message = str(refused.value)
    assert "\n" not in message and "'m0' and 'm1'" in message and "x.png" in message and "{id}" in message
    _, _, cells = build_plan(BenchConfig(out=tmp_path / "out", methods=[], datasets=[str(root)],
                                         predictions=[("p", str(pred))], predictions_pattern="{id}.png"))
    assert [r.id for r in cells[0].records] == ["m0", "m1"]


def test_record_ids_cannot_lead_outside_the_predictions_folder(tmp_path):
    (tmp_path / "pred").mkdir()
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(outside)
    method = PredictionsMethod(MethodOptions(), "peer", tmp_path / "pred", "{id}.png")
    image = np.zeros((8, 10, 3), np.uint8)
    for sample_id, problem in ((str(tmp_path / "outside"), "absolute"), ("../outside", "escapes the predictions")):
        with pytest.raises(DatasetError, match=f"sample '{sample_id}': path .* {problem}"):
            method.segment(image, SampleRegime(ORACLE, 1, 1, "precomputed", sample_id))


def test_another_predictions_folder_or_pattern_is_another_experiment(tmp_path, capsys):
    """Scoring a second folder into the same --out must not mix two experiments in one mean."""
    from detecture.cli import main

    root, pred = _with_predictions(tmp_path, 2)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("m0.png", "m1.png"):
        (other / f"seg{name}").write_bytes((pred / name).read_bytes())
    out = tmp_path / "out"
    argv = ["bench", "--datasets", str(root), "--methods", "", "--out", str(out), "--limit", "1"]
    assert main(argv + ["--predictions", f"p={pred}", "--predictions-pattern", "{id}.png"]) == 0
    capsys.readouterr()
    assert main(argv + ["--predictions", f"p={other}", "--predictions-pattern", "seg{id}.png"]) == 2
    err = capsys.readouterr().err
    assert "scored with other settings" in err and str(other.resolve()) in err and "seg{id}.png" in err
    settings = next(out.rglob("settings.json"))
    settings.write_bytes(b"\xff")  # damaged: said in the same one line, naming the file
    assert main(argv + ["--predictions", f"p={pred}", "--predictions-pattern", "{id}.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{settings}: malformed settings record" in err[0] and "--force" in err[0], err


def test_a_cell_stopped_before_its_first_result_takes_other_settings(tmp_path, monkeypatch):
    """Its settings were recorded before anything was scored, so a run stopped at once (Ctrl+C, a mistyped
    ``--regime``) locked the cell, holding no result, to settings the user never meant to keep."""
    from detecture.benchmark import cell_store
    from detecture.benchmark.regimes import parse_regime

    root, pred = _with_predictions(tmp_path, 2)
    out = tmp_path / "out"

    def config(**options) -> BenchConfig:
        return BenchConfig(out=out, methods=[], datasets=[str(root)], predictions=[("p", str(pred))],
                           predictions_pattern="{id}.png", gallery=0, **options)

    def interrupted(self, image, regime):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(PredictionsMethod, "segment", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_benchmark(config(regime=parse_regime("oracle:3")))
    cell = out / "cells" / "set" / "p"
    assert cell_store.read_cell(cell) == {}
    cells = run_benchmark(config())
    assert sorted(cell_store.read_cell(cell)) == ["m0", "m1"]
    assert cell_store.settings_change(cell, cells[0].settings) is None  # the settings its results were made with
    with pytest.raises(InputError, match="scored with other settings"):  # now it holds results: refused
        run_benchmark(config(regime=parse_regime("oracle:3")))


def test_method_names_that_make_one_folder_are_refused_naming_both(tmp_path):
    root, pred = _with_predictions(tmp_path, 1)
    config = BenchConfig(out=tmp_path / "out", methods=[], datasets=[str(root)],
                         predictions=[("p q", str(pred)), ("p_q", str(pred))], predictions_pattern="{id}.png")
    with pytest.raises(InputError, match="methods 'p q' and 'p_q' would share the result folder 'p_q'"):
        build_plan(config)
    with pytest.raises(InputError, match="method 'classical' is given twice"):
        build_plan(BenchConfig(out=tmp_path / "out", methods=["classical", "classical"], datasets=[str(root)]))


def test_distinct_sample_ids_get_distinct_partition_files_of_a_usable_length(tmp_path):
    from detecture.benchmark.cell_store import partition_path

    ids = ["a b", "a_b", "a/b", "../../a_b", "x" * 300, "x" * 301]
    paths = [partition_path(tmp_path, "d", "m", "ours", i) for i in ids]
    assert len(set(paths)) == len(ids)
    assert all(p.parent == tmp_path / "partitions" / "d" / "m" and len(p.name) < 255 for p in paths)
    assert partition_path(tmp_path, "d", "m", "ours", "m0").name == "m0.png"  # plain ids stay readable
