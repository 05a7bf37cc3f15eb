"""Every command checks the cheap things first (paths, options, output folder) and never writes over its inputs.

Model loaders are replaced by functions that fail the test if called: these errors must come before any model loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_fixture import make_unified
from detecture.cli import main
from detecture.errors import InputError


def _no_models(*args, **kwargs):
    raise AssertionError("a model was loaded before the cheap checks")


@pytest.fixture()
def no_models(monkeypatch):
    import detecture.miner.orchestrate as miner_run
    import detecture.training.factory as factory
    from detecture.benchmark.methods.classical import ClassicalMethod
    from detecture.pipeline import DetecturePipeline

    monkeypatch.setattr(DetecturePipeline, "from_pretrained", classmethod(_no_models))
    monkeypatch.setattr(DetecturePipeline, "tiny", classmethod(_no_models))
    monkeypatch.setattr(factory, "load_backbones", _no_models)
    monkeypatch.setattr(miner_run, "build_describer", _no_models)
    monkeypatch.setattr(ClassicalMethod, "load", _no_models)


def _one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


def test_mine_root_that_is_a_file(tmp_path, capsys, no_models):
    root = tmp_path / "ade.zip"
    root.write_bytes(b"zip")
    err = _one_error_line(capsys, ["mine", "--root", str(root), "--out", str(tmp_path / "o")])
    assert "is a file, expected a folder" in err and "ade.zip" in err


def test_mine_output_folder_cannot_be_its_input(tmp_path, capsys, no_models):
    root = tmp_path / "ade"
    root.mkdir()
    err = _one_error_line(capsys, ["mine", "--root", str(root), "--out", str(root)])
    assert "input folder" in err
    err = _one_error_line(capsys, ["mine", "--root", str(root), "--out", str(tmp_path)])
    assert "contains the input folder" in err


def test_output_folder_cannot_lie_inside_an_input_folder(tmp_path, capsys, no_models):
    """mine, train and bench read their input folders at any depth: an output folder inside one would replace inputs
    (a textured degree folder's images) or be read back as input by the next run."""
    root, textured = tmp_path / "ade", tmp_path / "tex"
    (root / "images" / "training").mkdir(parents=True)
    (textured / "eta_0.3" / "images").mkdir(parents=True)
    (textured / "eta_0.3" / "images" / "s0.jpg").write_bytes(b"textured input")
    data = make_unified(tmp_path / "mosaics", 1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for argv, inside in [
        (["mine", "--root", str(root), "--textured-root", str(textured), "--out", str(textured / "eta_0.3")], textured),
        (["mine", "--root", str(root), "--out", str(root / "images" / "training")], root),
        (["train", "--tiny", "--data", str(data), "--out", str(data / "run")], data),
        (["bench", "--datasets", str(data), "--methods", "classical", "--out", str(data / "bench")], data),
    ]:
        err = _one_error_line(capsys, argv)
        assert f"is inside the input folder {inside}; choose a separate output folder" in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_output_folder_cannot_hold_an_input_file(tmp_path, capsys, no_models):
    """train writes OUT/config.json and mine its own files under fixed names: a config the user keeps in the output
    folder would be replaced by the run's (train's with the --set overrides baked in)."""
    root, out = tmp_path / "ade", tmp_path / "run"
    (root / "images" / "training").mkdir(parents=True)
    out.mkdir()
    (out / "config.json").write_text("{}\n")
    (out / "miner.yaml").write_text("{}\n")
    data = make_unified(tmp_path / "mosaics", 1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for argv, config in [
        (["train", "--tiny", "--config", str(out / "config.json"), "--data", str(data), "--out", str(out),
          "--set", "optim.lr=0.5"], out / "config.json"),
        (["mine", "--root", str(root), "--config", str(out / "miner.yaml"), "--out", str(out)], out / "miner.yaml"),
    ]:
        err = _one_error_line(capsys, argv)
        assert f"contains the input file {config}; choose a separate output folder" in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_resume_may_read_the_runs_own_config(tmp_path, capsys, no_models):
    """A refused change on --resume says to resume with the run's values, its OUT/config.json: reading it there is
    no overwrite of the user's input (the next check here is the missing checkpoint)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}\n")
    data = make_unified(tmp_path / "mosaics", 1)
    err = _one_error_line(capsys, ["train", "--tiny", "--resume", "--config", str(out / "config.json"), "--data",
                                   str(data), "--out", str(out)])
    assert "no checkpoint to resume from" in err, err


def test_segment_output_folder_may_lie_inside_a_folder_it_reads_one_level_deep(tmp_path):
    """`segment . --out results/` (README): the folder's images are read, never its sub-folders."""
    from detecture.utils.paths import InputSet

    (tmp_path / "photo.png").write_bytes(b"x")
    assert InputSet([tmp_path], flat=True).check_output_dir(tmp_path / "results") == tmp_path / "results"
    with pytest.raises(InputError, match="is the input folder"):
        InputSet([tmp_path], flat=True).check_output_dir(tmp_path)


def test_bench_output_folder_cannot_be_a_dataset(tmp_path, capsys, no_models):
    root = make_unified(tmp_path / "mosaics", 1)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    err = _one_error_line(capsys, ["bench", "--datasets", str(root), "--methods", "classical", "--out", str(root)])
    assert "input folder" in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_bench_bad_head_fails_before_loading(tmp_path, capsys, no_models):
    root = make_unified(tmp_path / "mosaics", 1)
    err = _one_error_line(capsys, ["bench", "--datasets", str(root), "--methods", "detecture", "--head",
                                   str(tmp_path / "no-head"), "--out", str(tmp_path / "o")])
    assert "no-head" in err and "not found" in err


@pytest.mark.parametrize("case", ["missing_data", "data_is_file", "out_is_data", "existing_run", "damaged_pointer",
                                  "bad_option"])
def test_train_checks_before_loading(tmp_path, capsys, no_models, case):
    data = make_unified(tmp_path / "data", 1)
    out = tmp_path / "run"
    if case == "missing_data":
        data = tmp_path / "nothing"
    elif case == "data_is_file":
        data = data / "metadata.json"
    elif case == "out_is_data":
        out = data
    elif case == "existing_run":
        (out / "checkpoints" / "step-00000001").mkdir(parents=True)
        (out / "checkpoints" / "step-00000001" / "trainer_state.json").write_text("{}")
        (out / "checkpoints" / "latest.json").write_text('{"checkpoint": "step-00000001", "optimizer_step": 1}')
    elif case == "damaged_pointer":
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "latest.json").write_text('{"checkpoint": "../.."}')
    extra = ["--max-steps", "0"] if case == "bad_option" else []
    err = _one_error_line(capsys, ["train", "--tiny", "--data", str(data), "--out", str(out), *extra])
    expected = {"missing_data": "not found", "data_is_file": "is a file, expected a folder",
                "out_is_data": "input folder", "existing_run": "--resume", "bad_option": "--max-steps",
                "damaged_pointer": "latest.json: 'checkpoint' must name a checkpoint folder"}[case]
    assert expected in err


TINY_REFUSAL = "to the real backbones only; --tiny builds tiny random ones instead"


def _tiny_command(command: str, tmp_path, monkeypatch) -> list[str]:
    """A command line of ``command`` that would run with --tiny: an image, a dataset or a free port for it."""
    if command == "demo":
        pytest.importorskip("gradio")
        from demo_fixture import free_port
        from detecture.demo.engine import DemoEngine

        monkeypatch.setattr(DemoEngine, "create", classmethod(_no_models))
        return ["demo", "--port", str(free_port())]
    data = make_unified(tmp_path / "data", 1)
    return {"segment": ["segment", str(next((data / "images").iterdir())), "--out", str(tmp_path / "o")],
            "bench": ["bench", "--datasets", str(data), "--methods", "detecture-text", "--out", str(tmp_path / "o")],
            "train": ["train", "--data", str(data), "--out", str(tmp_path / "o")]}[command]


@pytest.mark.parametrize("command", ["segment", "bench", "train", "demo"])
def test_every_command_refuses_a_model_that_tiny_backbones_replace(tmp_path, capsys, monkeypatch, no_models,
                                                                   command):
    """--tiny builds tiny random backbones whatever --qwen names, so every command that has --tiny refuses the two
    together, in one wording, before any model loads and before anything is written."""
    err = _one_error_line(capsys, [*_tiny_command(command, tmp_path, monkeypatch), "--tiny", "--qwen", "some/model"])
    assert err == f"error: --qwen applies {TINY_REFUSAL}"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, options, named", [
    ("segment", ["--sam3", "s", "--device", "cuda:7", "--dtype", "fp16", "--quantization", "4bit",
                 "--trust-remote-code", "--max-new-tokens", "5"],
     "--sam3, --device, --dtype, --quantization, --trust-remote-code, --max-new-tokens"),
    ("demo", ["--sam3", "s", "--device", "cuda:7", "--dtype", "fp16", "--quantization", "4bit"],
     "--sam3, --device, --dtype, --quantization"),
    ("bench", ["--methods", "detecture,sam3", "--model", "qwen=q", "--sam3", "s", "--device", "cuda:7"],
     "--model qwen, --sam3, --device"),
    ("train", ["--sam3", "s", "--set", "model.quantization=4bit", "--set", "model.attn_implementation=eager"],
     "--sam3, --set model.quantization, --set model.attn_implementation"),
])
def test_each_option_that_tiny_backbones_leave_unread_is_named(tmp_path, capsys, monkeypatch, no_models, command,
                                                                options, named):
    """Every option that names or loads the real models, where the command's tiny backbones do not read it: the
    service's (segment, demo) run tiny ones on the CPU in fp32 without generating, bench's tiny methods read neither
    their models nor --device, and train's tiny ones take no model key but the head's."""
    err = _one_error_line(capsys, [*_tiny_command(command, tmp_path, monkeypatch), "--tiny", *options])
    assert err == f"error: {named} apply {TINY_REFUSAL}"


@pytest.mark.parametrize("tiny, source", [(["--set", "model.tiny=true"], "--set model.tiny"),
                                          (["--config", "tiny.yaml"], "model.tiny of {config}")])
def test_train_names_what_asked_for_tiny_backbones(tmp_path, capsys, monkeypatch, no_models, tiny, source):
    """Tiny backbones asked for by --set or by the config file (a --resume reads the run's own) ignore --qwen all
    the same; the refusal says where they came from."""
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  tiny: true\n")
    tiny = [str(config) if arg == "tiny.yaml" else arg for arg in tiny]
    err = _one_error_line(capsys, [*_tiny_command("train", tmp_path, monkeypatch), *tiny, "--qwen", "q"])
    assert err == f"error: --qwen applies to the real backbones only; {source.format(config=config)} builds tiny " \
                  "random ones instead"


def test_train_with_tiny_backbones_accepts_a_config_file_that_names_real_ones(tmp_path, capsys, no_models):
    """configs/train.yaml names a Qwen and a SAM3 for every run: only the command line's options are refused, so
    the published config still runs tiny (the next check here is the missing dataset)."""
    config = Path(__file__).parents[1] / "configs" / "train.yaml"
    err = _one_error_line(capsys, ["train", "--tiny", "--config", str(config), "--data", str(tmp_path / "none"),
                                   "--out", str(tmp_path / "o")])
    assert "training dataset not found" in err, err


def test_train_with_tiny_backbones_refuses_a_quantization_its_config_file_names(tmp_path, capsys, no_models):
    """A config file's quantization would make the LoRA take the tiny Qwen for a quantized one: refused with tiny
    backbones whatever names it, the file included (its Qwen and SAM3 are not, as above)."""
    config = tmp_path / "q.yaml"
    config.write_text("model:\n  quantization: 4bit\n")
    err = _one_error_line(capsys, ["train", "--tiny", "--config", str(config), "--data", str(tmp_path / "none"),
                                   "--out", str(tmp_path / "o")])
    assert err == f"error: model.quantization of {config} applies to the real backbones only; --tiny builds tiny " \
                  "random ones instead"


def test_input_set_compares_resolved_paths(tmp_path):
    from detecture.utils.paths import InputSet

    (tmp_path / "a").mkdir()
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(photo)
    inputs = InputSet([tmp_path / "a" / ".." / "photo.png"])
    assert photo in inputs and tmp_path / "link.png" in inputs and tmp_path / "other.png" not in inputs
    with pytest.raises(InputError, match="refusing to overwrite"):
        inputs.check_output(tmp_path / "link.png")
