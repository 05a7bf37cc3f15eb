"""What a non-editable install holds: the wheel carries every data file the package reads, and the commands run
from it alone (no repository beside it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
PACKAGE = REPO / "detecture"


def _data_files() -> list[str]:
    """Every file of the package that is not Python source: what the code opens at run time through the package."""
    return sorted(p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*")
                  if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the sources (building in place would leave build/ in the checkout)."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "detecture", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "-w", str(root / "dist"), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (root / "dist").glob("detecture-*.whl")
    return built


def test_wheel_holds_every_data_file_of_the_package(wheel):
    assert "detecture/miner/miner.yaml" in _data_files()  # the listing sees the files this test is about
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in _data_files() if f not in names] == []


def test_mine_runs_from_the_installed_wheel_alone(wheel, tmp_path):
    """``detecture mine`` with its default config and vocabulary, importing the package from the unpacked wheel
    and run from a folder with no ``configs/`` in reach."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import miner_fixture
    finally:
        sys.path.pop(0)
    ade, _ = miner_fixture.build(tmp_path / "data", with_textured=False)
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)
    script = (
        "import sys, detecture\n"
        f"assert detecture.__file__.startswith({str(installed)!r}), detecture.__file__\n"
        "from detecture.cli import main\n"
        f"sys.exit(main(['mine', '--root', {str(ade)!r}, '--out', 'mined', '--describer', 'template']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = json.loads((tmp_path / "mined" / "metadata.json").read_text(encoding="utf-8"))
    assert "ADE_train_clean2" in {sample["scene"] for sample in kept}


def test_configs_copy_of_the_miner_config_is_the_packaged_default():
    """``configs/miner.yaml`` is the copy users edit; the defaults themselves are the packaged file."""
    from detecture.miner.config import DEFAULT_CONFIG, packaged_file

    assert (REPO / "configs" / DEFAULT_CONFIG).read_bytes() == packaged_file(DEFAULT_CONFIG).read_bytes()
