"""Environment faults (disk full, unwritable output, a taken port) are one ``error:`` line naming the path and the
cause, with the documented exit status, and leave no half-written file.

A full disk is simulated by failing every rename into the output folder with ENOSPC and no file name, as a
``write()`` on a full disk fails: each command writes its files through a temporary that is renamed into place.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from detecture.cli import main
from detecture.commands.exit_status import SYSTEM_ERROR, USAGE_ERROR
from detecture.errors import InputError


def _disk_full_in(out: Path, monkeypatch) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).resolve().is_relative_to(out.resolve()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _bench(tmp_path: Path) -> list[str]:
    from bench_fixture import make_rwtd

    return ["bench", "--datasets", str(make_rwtd(tmp_path / "rwtd", 1)), "--methods", "classical", "--gallery", "0"]


def _mine(tmp_path: Path) -> list[str]:
    import miner_fixture

    ade, _ = miner_fixture.build(tmp_path / "ade", with_textured=False)
    return ["mine", "--root", str(ade), "--workers", "1"]


def _train(tmp_path: Path) -> list[str]:
    from train_fixture import write_mosaics

    return ["train", "--tiny", "--data", str(write_mosaics(tmp_path / "data", n=2, size=32)), "--max-steps", "1",
            "--epochs", "2", "--set", "optim.stage1_epochs=1", "--set", "train.eval_every_epochs=0"]


def _convert(tmp_path: Path) -> list[str]:
    from published_fixture import write_published

    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone

    write_published(tmp_path / "best.pt", QwenVL.tiny(0), Sam3Backbone.tiny(0))
    return ["convert", "published", str(tmp_path / "best.pt")]


@pytest.mark.parametrize("command", [_bench, _mine, _train, _convert], ids=lambda c: c.__name__[1:])
def test_disk_full_is_one_line_with_status_3_and_no_half_written_file(command, tmp_path, monkeypatch, capsys):
    argv = command(tmp_path)
    out = tmp_path / "out"
    capsys.readouterr()
    _disk_full_in(out, monkeypatch)
    assert main([*argv, "--out", str(out)]) == SYSTEM_ERROR
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}") and "No space left on device" in last, last
    written = [p for p in out.rglob("*")] if out.exists() else []
    assert not [p for p in written if p.name.startswith(".")], written  # no temporary left behind


def test_an_output_folder_that_cannot_be_created_is_a_usage_error(tmp_path, capsys):
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")
    argv = _bench(tmp_path)
    assert main([*argv, "--out", "/proc/x"]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --out /proc/x: cannot be created (No such file or directory)"]


def test_demo_on_a_taken_port_is_one_line(capsys):
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --port {port}:") and "server_port" not in err[0], err


def test_demo_on_an_address_of_another_machine_blames_the_host(capsys):
    pytest.importorskip("gradio")
    host = "192.0.2.1"  # TEST-NET-1 (RFC 5737): documentation only, assigned to no machine
    assert main(["demo", "--host", host, "--port", "7860"]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --host {host}: not an address of this machine (Cannot assign requested address)"], err


def test_demo_with_a_mistyped_head_is_one_line_before_any_model_loads(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gradio")
    from demo_fixture import free_port
    from detecture.demo.engine import DemoEngine

    def no_demo(*args, **kwargs):
        raise AssertionError("the demo started with a head folder that does not exist")

    monkeypatch.setattr(DemoEngine, "create", classmethod(no_demo))
    missing = tmp_path / "my-haed"
    assert main(["demo", "--vlm", "--head", str(missing), "--port", str(free_port())]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: head checkpoint not found"], err


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_demo_stopped_by_a_signal_leaves_no_temporary_folder(signum, status, tmp_path, monkeypatch, capsys):
    """Ctrl+C exits 130 and SIGTERM 143, each after removing the demo's folder and Gradio's upload cache; the warm-up
    request leaves nothing in the temporary folder either."""
    pytest.importorskip("gradio")
    import tempfile

    from demo_fixture import free_port

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    port = free_port()

    def stop_when_serving() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "ready on" not in capsys.readouterr().out:
            time.sleep(0.1)
        os.kill(os.getpid(), signum)

    threading.Thread(target=stop_when_serving, daemon=True).start()
    try:
        code = main(["demo", "--port", str(port)])
    except SystemExit as exc:
        code = exc.code
    assert code == status
    assert not list(tmp_path.iterdir())


def test_output_closed_by_its_reader_is_quiet_status_141_and_keeps_the_work(tmp_path):
    """``detecture segment ... | head -0``: the summary cannot be printed, but every image was segmented. Not a
    system fault ("stopped unfinished, run again"), and no traceback from the exit's own flush either."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(image)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    proc = subprocess.run([sys.executable, "-m", "detecture", "segment", str(image), "--method", "classical",
                           "--k", "2", "--workers", "1", "--out", str(tmp_path / "out")],
                          stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert "error" not in proc.stderr and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert (tmp_path / "out" / "noise.detecture.json").is_file()


@pytest.mark.parametrize("host", ["::1", "::", "[::1]"])
def test_demo_on_an_ipv6_address_is_one_line_that_says_what_works(host, capsys, monkeypatch):
    pytest.importorskip("gradio")
    from detecture.demo.engine import DemoEngine

    def no_demo(*args, **kwargs):
        raise AssertionError("the demo started on an address it cannot serve")

    monkeypatch.setattr(DemoEngine, "create", classmethod(no_demo))
    assert main(["demo", "--host", host, "--port", "7860"]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --host {host}: ") and "IPv6" in err[0], err
    assert "host name" in err[0] and "IPv4" in err[0]


def test_demo_model_options_without_models_to_load_are_refused(capsys, monkeypatch):
    """--qwen, --device ... only shape how --vlm / --head load the models; without them the demo serves classical
    only, so they are refused rather than silently ignored, and passed on when the models do load."""
    pytest.importorskip("gradio")
    from demo_fixture import free_port
    from detecture.demo.engine import DemoEngine

    loaded = {}

    def record(cls, **options):
        loaded.update(options)
        raise InputError("stop before serving")

    monkeypatch.setattr(DemoEngine, "create", classmethod(record))
    options = ["--qwen", "my/qwen", "--device", "cuda:7", "--dtype", "fp16"]
    assert main(["demo", *options, "--port", str(free_port())]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --qwen, --device, --dtype: ") and "--vlm" in err[0], err
    assert not loaded
    assert main(["demo", "--vlm", *options, "--port", str(free_port())]) == USAGE_ERROR
    assert capsys.readouterr().err.strip() == "error: stop before serving"
    assert (loaded["qwen"], loaded["device"], loaded["dtype"]) == ("my/qwen", "cuda:7", "fp16")


def test_demo_model_options_with_tiny_backbones_are_refused(capsys, monkeypatch):
    """--tiny builds its own backbones whatever --qwen or --device say: refused, also with --vlm."""
    pytest.importorskip("gradio")
    from demo_fixture import free_port
    from detecture.demo.engine import DemoEngine

    def no_demo(cls, **options):
        raise AssertionError("the demo started with options it would ignore")

    monkeypatch.setattr(DemoEngine, "create", classmethod(no_demo))
    assert main(["demo", "--tiny", "--vlm", "--device", "cuda:1", "--port", str(free_port())]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --device applies to the real backbones only; --tiny builds tiny random ones instead"], err


@pytest.mark.parametrize("raised", [(RuntimeError, "DataLoader worker (pid 4242) is killed by signal: Terminated."),
                                    (BrokenPipeError, "[Errno 32] Broken pipe")])
def test_an_error_raised_while_unwinding_from_sigterm_is_reported_as_terminated(raised, monkeypatch, capsys, caplog):
    """A SIGTERM sent to the whole process group kills the data loader's workers as it stops the main process, and
    torch then raises its own error about a dead worker in the middle of the unwinding, or as the loader is collected
    at the end. The run was still stopped by SIGTERM: one line "terminated" and status 143, with the other errors
    kept for -vv."""
    import argparse
    import logging

    import detecture.cli as cli

    error, message = raised

    class Loader:
        """A data loader's iterator: collected once the command is over, it finds its workers dead too."""

        def __del__(self) -> None:
            raise RuntimeError("DataLoader worker (pid 4243) is killed by signal: Terminated.")

    held = [Loader()]

    def command(args: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # Terminated is raised here
        finally:
            raise error(message)
        return 0

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=command, verbose=0)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    with caplog.at_level(logging.DEBUG, logger="detecture.cli"):
        assert main([]) == 128 + signal.SIGTERM
        held.clear()  # the process ends
    assert capsys.readouterr().err.strip() == "terminated"
    logged = [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert message in logged and "DataLoader worker (pid 4243) is killed by signal: Terminated." in logged
