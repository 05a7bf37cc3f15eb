"""``segment`` under faults: re-runs skip finished images, runs sharing ``--out`` never overwrite each other, an
output folder equal to an input folder is refused, disk full stops the run cleanly, workers die with the parent,
and a run that writes nothing leaves no empty folder behind.

Classical method on small mosaics (1 worker in process unless a test needs the pool), so each test takes seconds.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from detecture.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mosaics(tmp_path):
    from detecture.demo.examples import mosaic_two

    folder = tmp_path / "in"
    folder.mkdir()
    for i, side in enumerate((96, 104, 112)):
        Image.fromarray(mosaic_two(side)[0]).save(folder / f"m{i}.png")
    return folder


def _segment(folder: Path, out: Path, *extra: str) -> int:
    return main(["segment", str(folder), "--method", "classical", "--k", "2", "--workers", "1", "--out", str(out),
                 *extra])


def _records(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def test_rerun_skips_finished_images_force_redoes_them_and_a_changed_input_is_redone(mosaics, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(mosaics, out) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(first) == [f"m{i}.detecture.{ext}" for i in range(3) for ext in ("json", "png")]
    capsys.readouterr()

    assert _segment(mosaics, out) == 0
    assert "0 image(s) segmented, 0 failed, 3 already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == first  # nothing redone, no copies

    assert _segment(mosaics, out, "--force") == 0
    assert "3 image(s) segmented" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(first)  # redone in place, no photo_2

    Image.open(mosaics / "m1.png").transpose(Image.Transpose.ROTATE_90).save(mosaics / "m1.png")
    assert _segment(mosaics, out, "--k", "2") == 0
    assert "1 image(s) segmented, 0 failed, 2 already done" in capsys.readouterr().out
    other = tmp_path / "other"  # a different input of the same name gets a fresh name
    other.mkdir()
    (other / "m0.png").write_bytes((mosaics / "m2.png").read_bytes())
    assert _segment(other, out) == 0
    records = _records(out)
    assert records["m0_2.detecture.json"]["input"]["path"] == str((other / "m0.png").resolve())
    assert records["m0.detecture.json"]["input"]["path"] == str((mosaics / "m0.png").resolve())
    assert all("claim" not in r and r["settings"]["method"] == "classical" for r in records.values())


def test_a_name_claimed_by_another_live_run_is_left_to_it_and_a_dead_runs_claim_is_taken_over(mosaics, tmp_path,
                                                                                               capsys):
    from detecture.output import input_identity

    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        # a live run's claim, and dead runs' claims under the names earlier versions wrote them: the hidden
        # .<name>.detecture.claim, and a record under the JSON's name
        for name, pid, where in (("m0", other.pid, ".m0.claim"), ("m1", 2 ** 22 + 7, ".m1.detecture.claim"),
                                 ("m2", 2 ** 22 + 9, "m2.detecture.json")):
            claim = {"input": input_identity(mosaics / f"{name}.png"), "settings": {},
                     "claim": {"host": socket.gethostname(), "pid": pid}}
            (out / where).write_text(json.dumps(claim))
        assert _segment(mosaics, out) == 0
    finally:
        other.kill()
        other.wait()
    printed = capsys.readouterr().out
    assert "2 image(s) segmented, 0 failed, 1 being segmented by another run in this folder (skipped)" in printed
    assert sorted(p.name for p in out.iterdir()) == [".m0.claim"] + [
        f"m{i}.detecture.{ext}" for i in (1, 2) for ext in ("json", "png")]  # m0 untouched: the other run writes it
    assert all("regions" in record for record in _records(out).values())


def _kill_mid_batch(folder: Path, out: Path, signum: int) -> int:
    """Start `segment` on ``folder`` in its own process, send it ``signum`` once two images are finished (their
    JSON written: an overlay is written first), and return its exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "detecture", "segment", str(folder), "--method", "classical",
                             "--k", "2", "--workers", "1", "--out", str(out)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(list(out.glob("*.detecture.json"))) >= 2 or proc.poll() is not None, timeout=120)
    proc.send_signal(signum)
    proc.wait(60)
    proc.stderr.close()
    return proc.returncode


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_run_leaves_only_finished_records_under_the_results_names_and_a_rerun_completes_it(tmp_path,
                                                                                                    signum):
    """SIGTERM (a job scheduler's time limit, docker stop) unwinds like Ctrl+C: exit 143, the claims of unfinished
    images removed. Even SIGKILL, which nothing can clean up after, leaves no claim where a reader globbing the
    results looks: every *.detecture.json is a finished record. The same command run again finishes the rest."""
    from detecture.demo.examples import mosaic_two

    folder = tmp_path / "in"
    folder.mkdir()
    tile = mosaic_two(160)[0]
    for i in range(6):
        Image.fromarray(np.roll(tile, 9 * i, axis=1)).save(folder / f"im{i:02d}.png")
    out = tmp_path / "out"
    status = _kill_mid_batch(folder, out, signum)
    assert status == (128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGKILL)
    records = _records(out)
    assert 2 <= len(records) < 6 and all("regions" in record for record in records.values())
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    if signum == signal.SIGTERM:
        assert hidden == []  # the claims of the images not done were released
    else:  # the claims of the images not done, a write in progress: hidden, and only there
        assert hidden and all(name.endswith((".claim", ".tmp")) for name in hidden)
    assert all(p.name.startswith(".") or p.name.endswith(".detecture.png") or p.name in records
               for p in out.iterdir())
    assert _segment(folder, out) == 0
    assert sorted(_records(out)) == [f"im{i:02d}.detecture.json" for i in range(6)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("spelling", ["folder", "glob", "dot"])
def test_out_equal_to_an_input_folder_is_refused(mosaics, capsys, monkeypatch, spelling):
    monkeypatch.chdir(mosaics)
    source, out = {"folder": (str(mosaics), str(mosaics)), "glob": (f"{mosaics}/*.png", "."),
                   "dot": (".", str(mosaics))}[spelling]
    assert main(["segment", source, "--method", "classical", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and "input folder" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in mosaics.iterdir()) == ["m0.png", "m1.png", "m2.png"]


def test_disk_full_stops_with_one_line_keeps_finished_images_and_leaks_no_figure(mosaics, tmp_path, capsys,
                                                                                   monkeypatch):
    from detecture.utils import plotting
    from detecture.utils.plotting import pyplot

    real, calls = plotting.atomic_path, []

    def full_disk(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)

    out = tmp_path / "out"
    monkeypatch.setattr(plotting, "atomic_path", full_disk)
    assert main(["segment", str(mosaics), "--method", "classical", "--k", "2", "--workers", "1",
                 "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (f"error: {out / 'm1.detecture.png'}: No space left on device; segment stopped "
                                    "unfinished (re-run the same command to finish it)")
    assert "m0.png" in captured.out and "1 image(s) segmented, 0 failed" in captured.out
    assert pyplot().get_fignums() == []
    assert sorted(p.name for p in out.iterdir()) == ["m0.detecture.json", "m0.detecture.png"]  # no claim left

    monkeypatch.setattr(plotting, "atomic_path", real)
    assert _segment(mosaics, out) == 0
    assert "2 image(s) segmented, 0 failed, 1 already done" in capsys.readouterr().out


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _start(mosaics: Path, out: Path) -> subprocess.Popen:
    images = [str(p) for p in sorted(mosaics.iterdir())] * 4  # 12 images: still busy when signalled
    return subprocess.Popen([sys.executable, "-m", "detecture", "segment", *images, "--method", "classical",
                             "--workers", "2", "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            start_new_session=True)


def _is_forkserver(process: psutil.Process) -> bool:
    try:
        return "forkserver" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _all_gone(procs: list[psutil.Process], timeout: float = 10) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _in_session(sid: int) -> list[psutil.Process]:
    """The live processes of session ``sid`` (a run started with ``start_new_session``: its forkserver and workers,
    also those started after a snapshot of its descendants, and orphaned or not)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (OSError, psutil.Error):
            pass
    return members


def test_workers_stop_at_ctrl_c_and_die_with_a_killed_parent(mosaics, tmp_path):
    # Ctrl+C while the workers start: exit 130 with one line, and no worker goes on
    proc = _start(mosaics, tmp_path / "a")
    _wait_for(lambda: any(_is_forkserver(p) for p in _descendants(proc.pid)))
    time.sleep(0.3)  # the forkserver is importing its preload and the parent waits for its workers: mid start-up
    family = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal sends it to the whole process group
    assert proc.wait(60) == 130
    assert proc.stderr.read().strip().splitlines()[-1] == "interrupted"
    assert _all_gone(family)

    # kill -9 of the parent once workers write: the forkserver and the workers follow it
    out = tmp_path / "b"
    proc = _start(mosaics, out)
    _wait_for(lambda: any(out.glob("*.png")))
    family = _descendants(proc.pid)
    assert len(family) >= 3  # forkserver + 2 workers (+ resource tracker)
    proc.kill()
    proc.wait()
    assert _all_gone(family)
    pngs = len(list(out.glob("*.png")))
    _wait_for(lambda: not _in_session(proc.pid), timeout=10)  # no process of the run is left that could write
    assert len(list(out.glob("*.png"))) == pngs


def _python(code: str) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter on this checkout: a forkserver's workers must import what they run."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_worker_that_dies_stops_the_pool_instead_of_hanging():
    # SIGCHLD's default action is to ignore it: those items succeed; the SIGKILL item kills its worker (what the
    # out-of-memory killer does), whose item Pool would never run again
    code = ("import signal\n"
            "from detecture.utils.parallel import unordered_map\n"
            "items = [signal.SIGCHLD] * 6 + [signal.SIGKILL] + [signal.SIGCHLD] * 6\n"
            "try:\n"
            "    list(unordered_map(signal.raise_signal, items, 2))\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__, exc)\n")
    done = _python(code)
    assert done.stdout.strip() == "WorkerLost a worker process was killed by SIGKILL (the out-of-memory killer, or kill -9)"


def test_a_batch_of_many_items_returns_each_result_once():
    """Past 16 items per worker the pool sends items in chunks; every result still comes back, once."""
    code = ("from detecture.utils.parallel import unordered_map\n"
            "print(sorted(unordered_map(abs, list(range(-40, 0)), 2)) == list(range(1, 41)))\n")
    done = _python(code)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


def test_one_item_per_job_hands_back_each_result_as_it_finishes(tmp_path):
    """A caller that records each result as it arrives (bench) asks for chunks of one: a worker holding a finished
    result back for the rest of its chunk would lose it to a kill. Each item waits for the one before to reach the
    caller, which the default chunks of two (32 items, 2 workers) would never let happen."""
    import pool_items
    from detecture.utils.parallel import unordered_map

    for index in unordered_map(pool_items.after_previous, [(i, str(tmp_path)) for i in range(32)], 2, chunk=1):
        (tmp_path / str(index)).touch()
    assert len(list(tmp_path.iterdir())) == 32


def test_a_worker_error_whose_class_cannot_be_rebuilt_still_stops_the_run():
    """Pool's result thread dies on an exception it cannot unpickle, and the parent would wait forever."""
    code = ("import sys\n"
            "sys.path.insert(0, 'tests')\n"
            "import pool_items\n"
            "from detecture.utils.parallel import unordered_map\n"
            "try:\n"
            "    list(unordered_map(pool_items.fail_on_three, list(range(8)), 2))\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    done = _python(code)
    assert done.stdout.strip() == "TwoPartError: img3.png: bad", done.stderr[-2000:]


_GROUP_SIGTERM_CHILD = """\
import sys
sys.path.insert(0, 'tests')
import pool_items
from detecture.cli import Terminated, sigterm_as_interrupt
from detecture.utils.parallel import WorkerLost, unordered_map
try:
    with sigterm_as_interrupt():
        for n, _ in enumerate(unordered_map(pool_items.sleep_briefly, list(range(5000)), 2)):
            if n == 4:
                print('ready', flush=True)
except Terminated:
    sys.exit(143)
except WorkerLost:
    sys.exit(3)
"""


def test_sigterm_to_the_whole_process_group_stops_a_pool_run_at_once():
    """A scheduler's stop (Slurm's scancel, systemd, ``kill -TERM -PGID``) reaches the workers and the forkserver
    as it reaches the parent: the parent must still exit at once, whatever state its pool was left in. Half the runs
    get the signal as a group; the others get it in their workers and forkserver a moment before the parent (a group
    signalled under load), where ``Pool.terminate()`` waited forever on the thread that had died restarting the
    workers through the dead forkserver. Such a run may see its lost worker before its own SIGTERM (status 3)."""
    runs = [subprocess.Popen([sys.executable, "-c", _GROUP_SIGTERM_CHILD], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(6)]
    try:
        for proc in runs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        for i, proc in enumerate(runs):
            if i % 2:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.send_signal(signal.SIGTERM)
                time.sleep(0.1)
                proc.send_signal(signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        statuses = []
        for proc in runs:
            try:
                statuses.append(proc.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                statuses.append("hung")
        assert [status for i, status in enumerate(statuses) if not i % 2] == [128 + signal.SIGTERM] * 3, statuses
        assert all(status in (128 + signal.SIGTERM, 3) for status in statuses[1::2]), statuses
    finally:
        for proc in runs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_an_image_whose_name_is_not_utf8_is_segmented_and_recorded_with_its_name_escaped(mosaics, tmp_path, capsys):
    latin1 = mosaics / os.fsdecode(b"caf\xe9.png")  # a Latin-1 name, kept by Python as a lone surrogate
    (mosaics / "m0.png").rename(latin1)
    out = tmp_path / "out"
    assert _segment(mosaics, out) == 0  # was a UnicodeEncodeError when the claim was written
    assert "3 image(s) segmented, 0 failed" in capsys.readouterr().out
    record = json.loads((out / os.fsdecode(b"caf\xe9.detecture.json")).read_text(encoding="utf-8"))
    assert record["image"] == str(mosaics / "caf\\xe9.png") and record["input"]["path"].endswith("caf\\xe9.png")
    assert _segment(mosaics, out) == 0
    assert "3 already done" in capsys.readouterr().out


def test_a_finished_image_is_found_under_any_number_and_no_file_of_the_users_is_replaced(mosaics, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(mosaics / "m0.png", out) == 0
    # m0.bmp, added beside the finished m0.png, now comes first in the folder's order and prefers the name m0
    Image.open(mosaics / "m1.png").save(mosaics / "m0.bmp")
    assert _segment(mosaics, out) == 0
    assert "3 image(s) segmented, 0 failed, 1 already done" in capsys.readouterr().out
    records = _records(out)
    assert records["m0.detecture.json"]["image"] == str(mosaics / "m0.png")  # kept, not redone into m0_3
    assert records["m0_2.detecture.json"]["image"] == str(mosaics / "m0.bmp")
    assert "m0_3.detecture.json" not in records

    # files that are not this run's outputs keep their names: a JSON that is no object, an overlay without a record
    (out / "m1.detecture.json").write_text("[1, 2]")
    (out / "m2.detecture.json").unlink()
    (out / "m2.detecture.png").write_bytes(b"the user's own picture")
    assert _segment(mosaics, out, "--force") == 0
    assert (out / "m1.detecture.json").read_text() == "[1, 2]"
    assert (out / "m2.detecture.png").read_bytes() == b"the user's own picture"
    records = _records(out)
    assert records["m1_2.detecture.json"]["image"] == str(mosaics / "m1.png")
    assert records["m2_2.detecture.json"]["image"] == str(mosaics / "m2.png")


def test_a_record_without_its_overlay_is_redone_and_killed_writes_leave_no_temporaries(mosaics, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(mosaics, out) == 0
    (out / "m0.detecture.png").unlink()
    # m1 as a worker terminated inside its writes (SIGTERM at a disk-full stop) leaves it once its claim is released,
    # and another run's temporary
    for name in ("m1.detecture.json", "m1.detecture.png"):
        (out / name).unlink()
    left = [out / ".m0.detecture.png.abcd1234.tmp", out / ".m1.detecture.png.x_y9z0ab.tmp"]
    foreign = out / ".other.png.abcd1234.tmp"
    for path in (*left, foreign):
        path.write_bytes(b"half")
    capsys.readouterr()
    assert _segment(mosaics, out) == 0
    assert "2 image(s) segmented, 0 failed, 1 already done" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"m{i}.detecture.{ext}" for i in range(3) for ext in ("json", "png")] + [foreign.name])


def test_a_decompression_bomb_is_one_error_line_and_the_other_images_are_segmented(mosaics, tmp_path, capsys):
    from bench_fixture import write_bomb_png

    bomb = write_bomb_png(mosaics / "bomb.png")
    assert _segment(mosaics, tmp_path / "out") == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bomb}: refused as a possible decompression bomb")
    assert "3 image(s) segmented, 1 failed" in captured.out


def test_an_image_named_too_long_for_its_outputs_fails_alone_and_the_rest_of_the_batch_completes(mosaics, tmp_path,
                                                                                                   capsys):
    """The image's own name is legal, but ``<stem>.detecture.json`` is longer than the file system takes: that image
    fails on one line naming it (its problem, not the system's), the others are written, and a re-run skips them."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    long_image = mosaics / ("x" * (limit - len(".png")) + ".png")  # as long as the file system takes
    (mosaics / "m0.png").rename(long_image)
    out = tmp_path / "out"
    assert _segment(mosaics, out) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {long_image}: file name too long for its outputs")
    assert errors[0].endswith("rename it")
    assert "2 image(s) segmented, 1 failed" in captured.out
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(written) == [f"m{i}.detecture.{ext}" for i in (1, 2) for ext in ("json", "png")]

    assert _segment(mosaics, out) == 1
    captured = capsys.readouterr()
    assert "0 image(s) segmented, 1 failed, 2 already done" in captured.out
    assert len([line for line in captured.err.splitlines() if line.startswith("error:")]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written  # nothing redone


def test_an_image_whose_outputs_are_named_as_long_as_the_file_system_takes_is_segmented(mosaics, tmp_path, capsys):
    """``<stem>.detecture.json`` exactly at the file system's limit: the image's outputs can be written, so its claim,
    hidden beside them, must fit too, and a re-run finds the finished image."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    stem = "x" * (limit - len(".detecture.json"))
    (mosaics / "m0.png").rename(mosaics / f"{stem}.png")
    out = tmp_path / "out"
    assert _segment(mosaics, out) == 0
    assert "3 image(s) segmented, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}.detecture.{ext}" for name in (stem, "m1", "m2") for ext in ("json", "png"))
    assert _segment(mosaics, out) == 0
    assert "0 image(s) segmented, 0 failed, 3 already done" in capsys.readouterr().out


def test_an_output_folder_that_cannot_be_locked_warns_once_and_the_run_completes(mosaics, tmp_path, monkeypatch,
                                                                                  capsys, caplog):
    """NFS answers flock on a folder opened for reading with EBADF (Linux emulates it with POSIX locks), Lustre
    without flock with ENOSYS: one warning that concurrent runs are unprotected, and the runs go on."""
    import fcntl
    import logging

    def flock(fd: int, operation: int) -> None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(fcntl, "flock", flock)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="detecture.utils.claims"):
        assert _segment(mosaics, out) == 0
        assert _segment(mosaics, out, "--force") == 0
    assert "3 image(s) segmented, 0 failed" in capsys.readouterr().out
    warnings = [record.getMessage() for record in caplog.records if record.name == "detecture.utils.claims"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{out}: this folder cannot be locked")
    assert "must not run at the same time" in warnings[0]
    assert len(_records(out)) == 3


def test_a_finished_image_leaves_alone_the_claim_a_forced_run_took_on_it_meanwhile(mosaics, tmp_path, monkeypatch):
    """A ``--force`` run may claim an image's name the moment its JSON is written (a finished output is redone, and
    its JSON removed): the run that wrote it must not then drop that claim as if it were its own."""
    import socket

    from detecture.output import input_identity
    from detecture.utils import atomic

    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    theirs = {"input": input_identity(mosaics / "m0.png"), "settings": {},
              "claim": {"host": socket.gethostname(), "pid": other.pid}}
    write_json = atomic.write_json

    def write_then_claimed_by_a_forced_run(path, obj, *args, **kwargs) -> None:
        write_json(path, obj, *args, **kwargs)
        if Path(path).name == "m0.detecture.json":
            Path(path).unlink()
            write_json(out / ".m0.claim", theirs)

    monkeypatch.setattr(atomic, "write_json", write_then_claimed_by_a_forced_run)
    try:
        assert _segment(mosaics, out) == 0
        assert json.loads((out / ".m0.claim").read_text()) == theirs
        assert (out / "m0.detecture.png").exists()  # theirs to replace
    finally:
        other.kill()
        other.wait()


def test_a_run_that_writes_nothing_leaves_no_folder_it_made(mosaics, tmp_path, capsys, monkeypatch):
    """Every image failed: the default detecture_out/ (and the parents --out needed) are not left behind empty; a
    folder that was there before, or one that got outputs, is kept."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    monkeypatch.chdir(tmp_path)
    classical = ["--method", "classical", "--k", "2", "--workers", "1"]
    assert main(["segment", "bad.png", *classical]) == 1
    assert main(["segment", "bad.png", *classical, "--out", "made/for/it"]) == 1
    (tmp_path / "there").mkdir()
    assert main(["segment", "bad.png", *classical, "--out", "there"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "in", "there"]
    assert "0 image(s) segmented, 1 failed\n" in capsys.readouterr().out  # no "outputs in" a folder that is gone
    assert main(["segment", "bad.png", str(mosaics / "m0.png"), *classical, "--out", "some"]) == 1
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["m0.detecture.json", "m0.detecture.png"]


def test_a_folder_removed_while_a_run_waits_for_its_lock_is_made_again(tmp_path):
    """A run that made an output folder and wrote nothing removes it under the folder's lock; a run that was waiting
    for that lock to claim work there must not then write into the removed folder."""
    import threading

    from detecture.utils.claims import folder_lock

    folder, written = tmp_path / "out", []

    def claim() -> None:
        with folder_lock(folder):
            (folder / "claim").write_text("x")
            written.append(True)

    with folder_lock(folder):
        waiter = threading.Thread(target=claim)
        waiter.start()
        time.sleep(0.5)  # the waiter has opened the folder and waits for the lock
        folder.rmdir()
    waiter.join(10)
    assert written == [True] and (folder / "claim").read_text() == "x"
