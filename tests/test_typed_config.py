"""Typed configs: every key of configs/train.yaml and configs/miner.yaml has a declared type; bad values are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detecture.errors import InputError
from detecture.miner.config import load_config as load_miner_config
from detecture.miner.config import packaged_file
from detecture.training.config import load_config as load_train_config

CONFIGS = Path(__file__).parents[1] / "configs"


def _leaves(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        out += _leaves(value, path + ".") if isinstance(value, dict) and value else [(path, value)]
    return out


def _write_with(tmp_path: Path, source: Path, dotted: str, value: object) -> Path:
    data = yaml.load(source.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    path = tmp_path / source.name
    path.write_text(yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
    return path


def test_exponent_without_dot_is_a_number(tmp_path):
    """YAML 1.1 reads 5e-5 / 1e-2 as strings: they must still be the numbers they spell."""
    train_yaml = tmp_path / "train.yaml"
    train_yaml.write_text("optim:\n  lr: 5e-5\n  min_lr: 1e-7\n")
    assert yaml.safe_load(train_yaml.read_text())["optim"]["lr"] == "5e-5"  # the trap being tested
    cfg = load_train_config(train_yaml, {"optim.weight_decay": yaml.safe_load("1e-3")})
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.weight_decay) == (5e-5, 1e-7, 1e-3)
    assert isinstance(cfg.optim.lr, float)
    miner_yaml = tmp_path / "miner.yaml"
    miner_yaml.write_text((packaged_file("miner.yaml")).read_text().replace("min_area: 0.01", "min_area: 1e-2"))
    assert load_miner_config(miner_yaml).regions.min_area == 0.01


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("optim.lr", "fast", "optim.lr: expected a number, got 'fast'"),
        ("optim.epochs", "twenty", "optim.epochs: expected an integer, got 'twenty'"),
        ("optim.epochs", 9.5, "optim.epochs: expected an integer, got 9.5"),
        ("model.tiny", 1, "model.tiny: expected true or false, got 1"),
        ("loss.ce_weight", True, "loss.ce_weight: expected a number, got True"),
        ("optim.betas", [0.9], "optim.betas[1]: missing value"),
        ("optim.betas", [0.9, 0.99, 0.999], "optim.betas: expected 2 value(s), got [0.9, 0.99, 0.999]"),
        ("train.eval_regime", "sometimes", "train.eval_regime: expected 'autonomous' or 'oracle', got 'sometimes'"),
        ("optim.stage2_scales.head", "high", "optim.stage2_scales.head: expected a number, got 'high'"),
    ],
)
def test_train_config_errors_are_one_line_naming_file_and_key(tmp_path, dotted, value, expected):
    path = _write_with(tmp_path, CONFIGS / "train.yaml", dotted, value)
    with pytest.raises(InputError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}: {expected}"


def test_override_errors_name_the_override():
    with pytest.raises(InputError) as info:
        load_train_config(CONFIGS / "train.yaml", {"optim.lr": "fast"})
    assert str(info.value) == "--set optim.lr: expected a number, got 'fast'"
    with pytest.raises(InputError, match=r"^--set optim\.lrr: unknown key \(known: lr, "):
        load_train_config(None, {"optim.lrr": 1})
    # an unknown section that only the override makes is the override's, not the defaults' or the file's
    for path in (None, CONFIGS / "train.yaml"):
        with pytest.raises(InputError, match=r"^--set foo\.bar: foo: unknown key \(known: model, "):
            load_train_config(path, {"foo.bar": 1})


def test_miner_config_errors_are_one_line(tmp_path):
    path = _write_with(tmp_path, packaged_file("miner.yaml"), "threshold", "high")
    with pytest.raises(InputError) as info:
        load_miner_config(path)
    assert str(info.value) == f"{path}: threshold: expected a number, got 'high'"
    path = _write_with(tmp_path, packaged_file("miner.yaml"), "regions.max_regions", 4.5)
    with pytest.raises(InputError, match=r"regions\.max_regions: expected an integer, got 4\.5$"):
        load_miner_config(path)


@pytest.mark.parametrize(("source", "load"), [(CONFIGS / "train.yaml", load_train_config),
                                               (CONFIGS / "miner.yaml", load_miner_config)])
def test_every_key_has_a_declared_type(tmp_path, source, load):
    """Every number / flag / section in the shipped file rejects a value of the wrong type, naming its key; every key
    of a section is checked, and an unknown key next to it is an error too."""
    leaves = _leaves(yaml.safe_load(source.read_text()))
    checked = 0
    for dotted, value in leaves:
        if isinstance(value, (bool, int, float)):
            path = _write_with(tmp_path, source, dotted, "not-a-value")
            with pytest.raises(InputError, match=rf"^{path}: {dotted}: expected "):
                load(path)
            checked += 1
        section = dotted.rsplit(".", 1)[0] if "." in dotted else None
        path = _write_with(tmp_path, source, f"{section}.zzz_unknown" if section else "zzz_unknown", 1)
        with pytest.raises(InputError, match=rf"{path}: {section or 'zzz_unknown'}"):
            load(path)
    assert checked >= 20


def test_documented_set_example_gets_past_the_config(tmp_path, capsys):
    """`train --set optim.lr=5e-5` (the --help example) used to end in a TypeError; now the config is accepted and
    the next check (the dataset folder) is what fails here."""
    from detecture.cli import main

    code = main(["train", "--config", str(CONFIGS / "train.yaml"), "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o"), "--set", "optim.lr=5e-5"])
    err = capsys.readouterr().err
    assert code == 2 and "training dataset not found" in err
    code = main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--set", "optim.lr=fast"])
    assert code == 2 and capsys.readouterr().err == "error: --set optim.lr: expected a number, got 'fast'\n"


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("optim.clip_norm", -1.0, "optim.clip_norm must be > 0"),  # torch would flip every gradient
        ("optim.clip_norm", 0.0, "optim.clip_norm must be > 0"),  # torch would zero every gradient
        ("optim.betas", [0.9, 1.0], "optim.betas must both be in [0, 1)"),
        ("optim.betas", [-0.1, 0.999], "optim.betas must both be in [0, 1)"),
        ("optim.weight_decay", -0.01, "optim.weight_decay must be >= 0"),
        ("train.log_every", 0, "train.log_every must be >= 1"),  # the loop takes step % log_every
        ("train.emission_check_samples", 0, "train.emission_check_samples must be >= 1"),
        ("train.eval_max_samples", 0, "train.eval_max_samples must be >= 1"),
        ("train.max_new_tokens", 0, "train.max_new_tokens must be >= 1"),
        ("train.eval_every_epochs", -1, "train.eval_every_epochs must be >= 0 (0 switches it off)"),
        ("train.emission_every_steps", -5, "train.emission_every_steps must be >= 0 (0 switches it off)"),
        ("train.save_every_steps", -500, "train.save_every_steps must be >= 0 (0 switches it off)"),
        # a negative weight or alpha trains away from the target; jitter factors are drawn in [1 - s, 1 + s]
        ("loss.dice_weight", -3.0, "loss.dice_weight: expected at least 0, got -3.0"),
        ("loss.lm_weight", -0.1, "loss.lm_weight: expected at least 0, got -0.1"),
        ("loss.shifted_zero_alpha", -2.0, "loss.shifted_zero_alpha: expected at least 0, got -2.0"),
        ("data.augment.color_jitter", 1.5, "data.augment.color_jitter: expected at most 1, got 1.5"),
        ("data.augment.hflip", -1.0, "data.augment.hflip: expected at least 0, got -1.0"),
        ("data.augment.scale_crop_prob", 2.0, "data.augment.scale_crop_prob: expected at most 1, got 2.0"),
        ("data.augment.scale_crop", [0.9, 0.2], "data.augment.scale_crop must be [smallest, largest], got [0.9, 0.2]"),
        ("data.augment.scale_crop", [0.0, 1.0], "data.augment.scale_crop[0]: expected more than 0, got 0.0"),
        ("data.num_workers", -1, "data.num_workers: expected at least 0, got -1"),
        ("lora.r", 0, "lora.r: expected at least 1, got 0"),
        ("lora.alpha", 0, "lora.alpha: expected at least 1, got 0"),
        ("lora.dropout", 1.5, "lora.dropout: expected less than 1, got 1.5"),
        ("cache.shard_samples", 0, "cache.shard_samples: expected at least 1, got 0"),
    ],
)
def test_out_of_range_values_are_one_line_at_load(tmp_path, dotted, value, expected):
    """Caught when the file is read, not when AdamW is built after the backbones load (or never, for clip_norm), nor
    as a ZeroDivisionError (or a silently odd cadence) in the loop."""
    path = _write_with(tmp_path, CONFIGS / "train.yaml", dotted, value)
    with pytest.raises(InputError) as info:
        load_train_config(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_zero_switches_the_optional_run_controls_off():
    cfg = load_train_config(None, {"train.eval_every_epochs": 0, "train.emission_every_steps": 0,
                                   "train.save_every_steps": 0})
    assert (cfg.train.eval_every_epochs, cfg.train.emission_every_steps, cfg.train.save_every_steps) == (0, 0, 0)


def test_range_errors_blame_the_command_line_option_that_set_the_value(tmp_path, capsys):
    """`--epochs 1` under the default stage1_epochs 8 is the option's fault, not the YAML file's."""
    from detecture.cli import main

    args = ["train", "--config", str(CONFIGS / "train.yaml"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(args + ["--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        "error: --epochs 1: optim.stage1_epochs (8) must be between 0 and optim.epochs (1)\n")
    assert main(args + ["--set", "optim.clip_norm=-1"]) == 2
    assert capsys.readouterr().err == "error: --set optim.clip_norm: optim.clip_norm must be > 0\n"


@pytest.mark.parametrize("option, pair, named", [
    (["--qwen", "Qwen/A"], "model.qwen=Qwen/B",
     "--qwen Qwen/A and --set model.qwen=Qwen/B give two values for model.qwen"),
    (["--tiny"], "model.tiny=false", "--tiny and --set model.tiny=false give two values for model.tiny"),
])
def test_an_option_and_a_set_that_give_one_key_two_values_are_refused(tmp_path, capsys, option, pair, named):
    """Keeping either value would ignore the other; the same value both ways is no conflict (the dataset folder,
    checked next, is what fails then)."""
    from detecture.cli import main

    args = ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"), *option]
    assert main(args + ["--set", pair]) == 2
    assert capsys.readouterr().err == f"error: {named}; give one\n"
    assert main(args + ["--set", pair.split("=")[0] + "=" + (option[1] if len(option) > 1 else "true")]) == 2
    assert "training dataset not found" in capsys.readouterr().err


def test_epochs_overrides_a_set_of_optim_epochs(tmp_path, capsys):
    """Extending a run re-runs its command line, --set lines included, with --resume --epochs N: not a conflict."""
    from detecture.cli import main

    args = ["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--epochs", "9"]
    assert main(args + ["--set", "optim.epochs=10", "-v"]) == 2
    err = capsys.readouterr().err
    assert "two values" not in err and "training dataset not found" in err


def test_head_overrides_are_checked_with_the_head_config_when_the_file_is_read(tmp_path):
    """model.head reaches HeadConfig only after the backbones load: its typos and ranges must fail first."""
    path = _write_with(tmp_path, CONFIGS / "train.yaml", "model.head", {"bridge_dropout": 2})
    with pytest.raises(InputError) as info:
        load_train_config(path)
    assert str(info.value) == f"{path}: model.head.bridge_dropout: expected less than 1, got 2"
    with pytest.raises(InputError, match=r"^--set model\.head\.dropot: model\.head\.dropot: unknown key"):
        load_train_config(None, {"model.head.dropot": 0.1})


@pytest.mark.parametrize(("head", "expected"), [
    ({"contract": {"prompts": "published"}}, "model.head.contract cannot be set: a fresh head trains under "
                                             "Detecture's contract, and --init HEAD trains under that head's"),
    ({"prompt_dim": 8}, "model.head.prompt_dim cannot be set: it is taken from the loaded backbones"),
])
def test_head_keys_the_run_decides_are_refused_when_the_file_is_read(tmp_path, head, expected):
    """The contract and the backbone widths are not model.head overrides: set there, the run died after the
    backbones loaded (an AttributeError, a duplicate keyword)."""
    path = _write_with(tmp_path, CONFIGS / "train.yaml", "model.head", head)
    with pytest.raises(InputError) as info:
        load_train_config(path)
    assert str(info.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(("overrides", "blamed"), [
    ({"model.head.num_slots": 4}, "--set model.head.num_slots"),
    ({"model.head.num_slots": 6, "data.max_regions": 6}, "--set data.max_regions, --set model.head.num_slots"),
])
def test_head_slots_too_few_for_the_regions_a_sample_may_have_are_refused_when_the_file_is_read(overrides, blamed):
    """The head's slots are the dustbin and one per region: a head of num_slots 4 with samples of up to 6 regions
    would stop the run at the first sample with 4 or more, maybe hours in."""
    with pytest.raises(InputError) as info:
        load_train_config(None, overrides)
    slots, regions = overrides["model.head.num_slots"], overrides.get("data.max_regions", 6)
    assert str(info.value) == (f"{blamed}: model.head.num_slots ({slots}) must be at least data.max_regions + 1 "
                               f"({regions + 1}): the slots are the dustbin and one per region, and a training sample "
                               "may have data.max_regions regions")


def test_head_slots_that_hold_the_dustbin_and_every_region_are_accepted():
    assert load_train_config(None, {"model.head.num_slots": 4, "data.max_regions": 3}).model.head["num_slots"] == 4
    assert load_train_config(None, {"model.head.num_slots": 7}).data.max_regions == 6
