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


def test_a_file_system_refusing_the_temporary_is_reported_for_the_file_being_written(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(prefix, suffix, dir):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, prefix + "k3j9x2ab" + suffix))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as caught:
        atomic.write_text(tmp_path / "result.json", "{}")
    assert (caught.value.errno, caught.value.filename) == (errno.EROFS, str(tmp_path / "result.json"))
