"""Atomic writes leave the permission bits a plain write would (umask respected, an existing file keeps its mode)."""

from __future__ import annotations

import os
import stat

import pytest

from detecture.utils import atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_match_plain_writes(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain_file = tmp_path / "plain.txt"
        plain_file.write_text("x")  # the reference: what open(path, "w") gives under this umask
        plain_dir = tmp_path / "plain_dir"
        plain_dir.mkdir()
        atomic.write_json(tmp_path / "new.json", {"a": 1})
        with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
            (tmp / "weights.bin").write_bytes(b"0")
        assert atomic.current_umask() == umask
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new.json") == _mode(plain_file) == 0o666 & ~umask
    assert _mode(tmp_path / "ckpt") == _mode(plain_dir) == 0o777 & ~umask
    assert (tmp_path / "ckpt" / "weights.bin").read_bytes() == b"0"


def test_folders_written_whole_in_a_setgid_folder_keep_the_bit_a_plain_mkdir_gives(tmp_path):
    """A shared folder (chmod g+s) hands its group and the setgid bit down to new folders; the chmod to 0777 minus
    the umask dropped the bit, so files later written in a checkpoint lost the project's group."""
    os.chmod(tmp_path, 0o2775)
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    if not _mode(tmp_path / "plain") & stat.S_ISGID:
        pytest.skip("this file system does not hand the setgid bit down")
    with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"0")
    assert _mode(tmp_path / "ckpt") == _mode(tmp_path / "plain") == 0o2777 & ~atomic.current_umask()
    assert _mode(tmp_path / "ckpt" / "sub") == _mode(tmp_path / "plain" / "sub")
    os.chmod(tmp_path, 0o775)
    with atomic.atomic_dir(tmp_path / "elsewhere") as tmp:
        (tmp / "sub").mkdir()
    assert not (_mode(tmp_path / "elsewhere") | _mode(tmp_path / "elsewhere" / "sub")) & stat.S_ISGID


def test_links_in_a_folder_written_whole_leave_what_they_point_to_alone(tmp_path):
    """Giving plain modes to a checkpoint's entries followed its symbolic links: a link to a shared file or folder
    (or to one outside the checkpoint) changed that target's mode, and a dangling link failed the flush."""
    secret, shared = tmp_path / "private_key", tmp_path / "shared"
    secret.write_text("k")
    os.chmod(secret, 0o600)
    shared.mkdir()
    os.chmod(shared, 0o700)
    with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "to_file").symlink_to(secret)
        (tmp / "to_folder").symlink_to(shared)
        (tmp / "dangling").symlink_to(tmp_path / "nothing")
        (tmp / "weights.bin").write_bytes(b"0")
    assert _mode(secret) == 0o600 and _mode(shared) == 0o700
    assert all((tmp_path / "ckpt" / name).is_symlink() for name in ("to_file", "to_folder", "dangling"))
    assert _mode(tmp_path / "ckpt" / "weights.bin") == 0o666 & ~atomic.current_umask()


def test_rewriting_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic.write_text(path, "new")
    assert path.read_text() == "new"
    assert _mode(path) == 0o640


def test_remove_temporaries_of_removes_only_the_named_files_leftovers(tmp_path):
    """A killed write leaves ``.<name>.<random>.tmp``; a process cleans up only the names it writes, so another
    process's write in progress in the same folder (a sibling share) is left alone."""
    import tempfile

    left = {name: tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)[1]
            for name in ("a_1.png", "a_1.png.png", "b_1.png")}
    (tmp_path / "a_1.png").write_bytes(b"finished file")
    removed = atomic.remove_temporaries_of(tmp_path, {"a_1.png", "c.json"})
    assert [str(p) for p in removed] == [left["a_1.png"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a_1.png", os.path.basename(left["a_1.png.png"]), os.path.basename(left["b_1.png"])])
    assert atomic.remove_temporaries_of(tmp_path / "missing", {"a_1.png"}) == []


@pytest.mark.parametrize("name", ["b" * 240 + ".json", "é" * 125 + ".json"])
def test_a_name_the_file_system_takes_is_written_atomically_and_its_leftovers_found(tmp_path, name):
    """A 245 or 255-byte name is legal, but ``.<name>.<8>.tmp`` is 14 bytes longer: the temporary carries a cut name
    (segment stopped at such an image on every re-run). The clean-up still finds a killed write's temporary, and
    only its: another long name with the same beginning keeps its write in progress."""
    assert 245 <= len(os.fsencode(name)) <= 255
    path, sibling = tmp_path / name, tmp_path / (name[:-5] + ".yaml")
    with atomic.atomic_path(path) as tmp:
        tmp.write_text("complete")
        temporary = tmp.name
    assert path.read_text() == "complete" and sorted(os.listdir(tmp_path)) == [name]
    with atomic.atomic_path(sibling) as tmp:
        in_progress = tmp.name
        (tmp_path / temporary).write_bytes(b"left by a killed write")
        assert atomic.remove_temporaries_of(tmp_path, {name}) == [tmp_path / temporary]
        assert sorted(os.listdir(tmp_path)) == sorted([name, in_progress])
    assert sorted(os.listdir(tmp_path)) == sorted([name, sibling.name])


def test_a_file_system_refusing_the_temporary_is_reported_for_the_file_being_written(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(prefix, suffix, dir):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, prefix + "k3j9x2ab" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as caught:
        atomic.write_text(tmp_path / "result.json", "{}")
    assert (caught.value.errno, caught.value.filename) == (errno.EROFS, str(tmp_path / "result.json"))


def _record_syncs(monkeypatch, events: list, fail=None) -> None:
    """Record each fsync (by the path of its file descriptor) and rename in ``events``; ``fail(fd)`` may return an
    errno for fsync to fail with."""
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        code = fail(fd) if fail else None
        if code:
            raise OSError(code, os.strerror(code))
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names a file descriptor through /proc")


@needs_proc
def test_a_file_reaches_the_disk_before_its_name_and_its_name_after(tmp_path, monkeypatch):
    """A power loss after the rename must not leave the new name over data still in memory (a result file vouching
    for images that are not on disk), nor lose the rename: the temporary is flushed, renamed, then its folder."""
    folder = os.path.realpath(tmp_path)
    events: list = []
    _record_syncs(monkeypatch, events)
    atomic.write_json(tmp_path / "result.json", {"a": 1})
    [(_, tmp, target)] = [e for e in events if e[0] == "replace"]
    assert target == os.path.join(folder, "result.json")
    assert events == [("fsync", tmp), ("replace", tmp, target), ("fsync", folder)]
    assert (tmp_path / "result.json").read_text() == '{\n "a": 1\n}\n'


@needs_proc
def test_a_folder_written_whole_reaches_the_disk_before_its_name(tmp_path, monkeypatch):
    folder = os.path.realpath(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "old.bin").write_bytes(b"old")
    events: list = []
    _record_syncs(monkeypatch, events)
    with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "weights.bin").write_bytes(b"0")
        (tmp / "config.json").write_text("{}")
        written = os.path.realpath(tmp)
    renamed_in = next(i for i, e in enumerate(events) if e[0] == "replace" and e[1] == written)
    before = {e[1] for e in events[:renamed_in] if e[0] == "fsync"}
    assert {written, *(os.path.join(written, name) for name in ("config.json", "sub", "sub/weights.bin"))} <= before
    assert ("fsync", folder) in events[renamed_in:]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "sub"]


def test_a_folder_that_cannot_be_flushed_still_gets_its_file(tmp_path, monkeypatch):
    """Some platforms refuse to fsync a folder: the write still succeeds (the folder's flush is best effort)."""
    import errno

    def refuse_folders(fd):
        return errno.EINVAL if stat.S_ISDIR(os.fstat(fd).st_mode) else None

    _record_syncs(monkeypatch, [], fail=refuse_folders)
    atomic.write_text(tmp_path / "report.md", "new")
    with atomic.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "weights.bin").write_bytes(b"0")
    assert (tmp_path / "report.md").read_text() == "new"
    assert (tmp_path / "ckpt" / "weights.bin").read_bytes() == b"0"


def test_a_disk_error_at_the_flush_is_reported_for_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """A full disk or an I/O error often shows only when the data is flushed: the write fails naming the file, the
    previous version stays, and no temporary is left."""
    import errno

    path = tmp_path / "result.json"
    path.write_text("old")

    def fail_files(fd):
        return None if stat.S_ISDIR(os.fstat(fd).st_mode) else errno.EIO

    _record_syncs(monkeypatch, [], fail=fail_files)
    with pytest.raises(OSError) as caught:
        atomic.write_text(path, "new")
    assert (caught.value.errno, caught.value.filename) == (errno.EIO, str(path))
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
