"""Small command-line promises: ``-v`` means more logs wherever it is written, an unknown option is reported under
its command's usage with the nearest option, converted heads honour the umask and print no foreign warnings, a
folder given as a checkpoint file says so, a dataset name never silently ignores (or silently picks) a folder of
that name in the current directory, and one setting given two values by two spellings is refused alike by every
command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from detecture.benchmark.datasets import find_dataset
from detecture.cli import build_parser, main
from detecture.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv,verbose", [(["segment", "x.png"], 0), (["-v", "segment", "x.png"], 1),
                                          (["segment", "x.png", "-v"], 1)])
def test_v_means_more_logs_before_or_after_the_command(argv, verbose):
    args = build_parser().parse_args(argv)
    assert getattr(args, "verbose", 0) == verbose and args.show_contract is False


def test_converted_head_honours_the_umask_and_hides_bitsandbytes_cpu_kernel_warning(tmp_path, capsys):
    import logging

    from published_fixture import write_published

    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone

    write_published(tmp_path / "best.pt", QwenVL.tiny(0), Sam3Backbone.tiny(0))
    old = os.umask(0o002)
    try:
        assert main(["convert", "published", str(tmp_path / "best.pt"), "--out", str(tmp_path / "head")]) == 0
    finally:
        os.umask(old)
    entries = [tmp_path / "head", *(tmp_path / "head").rglob("*")]
    assert any(p.name == "model.safetensors" for p in entries)
    for path in entries:
        expected = 0o775 if path.is_dir() else 0o664
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    # What bitsandbytes logs when imported on a machine without its optional CPU kernels (once per process, so
    # it is logged here again): not shown without -vv.
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from "
                                                                "kernels-community: No module named 'kernels'")
    assert "kernels" not in capsys.readouterr().err


def test_convert_given_a_folder_says_it_is_a_folder(tmp_path, capsys):
    assert main(["convert", "published", str(tmp_path), "--out", str(tmp_path / "head")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path}: is a folder; give the checkpoint file inside it (e.g. {tmp_path / 'best.pt'})"


def test_a_dataset_name_never_silently_ignores_a_folder_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rwtd").mkdir()
    (tmp_path / "root" / "other").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no folder of that name under .*; ./rwtd is a folder here: write ./rwtd"):
        find_dataset("rwtd", data_root=tmp_path / "root")
    (tmp_path / "root" / "RWTD").mkdir()
    with pytest.raises(DatasetError, match=r"both .*RWTD \(datasets root\) and ./rwtd exist"):
        find_dataset("rwtd", data_root=tmp_path / "root")
    assert find_dataset("./rwtd", data_root=tmp_path / "root") == Path("rwtd")
    assert find_dataset("rwtd", data_root=tmp_path) == tmp_path / "rwtd"  # the root is here: one folder, no doubt



@pytest.mark.parametrize("argv,unknown,hint", [
    (["segment", "x.png", "--methods", "classical"], "--methods classical", "--method"),
    (["train", "--data", "d", "--out", "o", "--resmue"], "--resmue", "--resume"),
    (["bench", "--out", "o", "--regimes=oracle"], "--regimes=oracle", "--regime"),
    (["segment", "x.png", "--zzzzzz"], "--zzzzzz", None),
])
def test_an_unknown_option_is_reported_by_its_command_with_the_nearest_option(argv, unknown, hint, capsys):
    """The command's own usage lists the options the user was reaching for; the top-level one lists none."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: detecture {argv[0]} ")
    assert f"unrecognized arguments: {unknown}" in err
    assert (f"did you mean {hint}?" in err) if hint else "did you mean" not in err


@pytest.mark.parametrize("argv, message", [
    (["convert", "published", "best.pt", "--out", "o", "--qwen", "Qwen/B", "--base", "Qwen/A"],
     "--qwen Qwen/B and --base Qwen/A give two values for the Qwen3-VL model"),
    (["bench", "--methods", "detecture", "--out", "o", "--qwen", "Qwen/B", "--model", "qwen=Qwen/A"],
     "--qwen Qwen/B and --model qwen=Qwen/A give two values for the Qwen3-VL model"),
    (["train", "--data", "d", "--out", "o", "--qwen", "Qwen/B", "--set", "model.qwen=Qwen/A"],
     "--qwen Qwen/B and --set model.qwen=Qwen/A give two values for model.qwen"),
])
def test_two_values_for_one_setting_are_refused_alike_by_every_command(argv, message, tmp_path, monkeypatch, capsys):
    """Keeping either value would ignore the other; every command names both spellings as typed, in one wording."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("detecture.benchmark.suite.run", lambda config: pytest.fail("the run started"))
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {message}; give one\n"
    assert not list(tmp_path.iterdir())
