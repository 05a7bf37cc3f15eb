"""End-to-end mining on the fixture: output format, split by scene, rejections, resume after kill, idempotence."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detecture.data.metadata import load_metadata, load_sample
from detecture.errors import InputError, ModelAccessError, RunStopped
from detecture.miner.config import load_config
from detecture.miner.describers import QwenDescriber, validate_description
from detecture.miner.orchestrate import MergeLeft, MineOptions, mine
from detecture.miner.split import scene_split
from detecture.utils.parallel import Shard

import miner_fixture as fx

REPO = Path(__file__).resolve().parents[1]
KEPT = {"ADE_train_clean2", "ADE_train_clean3", "ADE_train_fragment"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return fx.build(tmp_path_factory.mktemp("ade"))


@pytest.fixture(scope="module")
def mined(dataset, tmp_path_factory):
    ade, textured = dataset
    out = tmp_path_factory.mktemp("mined") / "out"
    summary = mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1, arrow=True))
    return out, summary


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detecture", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def mine_args(dataset, out: Path, *extra: str) -> list[str]:
    ade, textured = dataset
    return ["mine", "--root", str(ade), "--textured-root", str(textured), "--out", str(out), *extra]


def outputs(out: Path) -> dict[str, bytes]:
    """Everything that must be identical between runs (the contact sheet JPEGs and histogram PNG excluded)."""
    files = ["metadata.json", "metadata_train.json", "metadata_val.json", "rejected.jsonl"]
    files += [f"masks/{p.name}" for p in sorted((out / "masks").iterdir())]
    files += [f"images/{p.name}" for p in sorted((out / "images").iterdir())]
    return {f: (out / f).read_bytes() for f in files}


def test_mined_metadata_loads_and_validates(mined):
    out, summary = mined
    records = load_metadata(out)
    cfg = load_config()
    assert {r.extra["scene"] for r in records} == KEPT
    for r in records:
        sample = load_sample(out, r)
        assert 1 <= len(r.textures) <= 6 and sample.masks.shape[0] == len(r.textures)
        assert (sample.masks.sum(axis=0) <= 1).all()
        assert all(m.mean() >= cfg.regions.min_area for m in sample.masks)
        for d in sample.descriptions:
            assert validate_description(d, cfg.describer.min_words, cfg.describer.max_words) is None
        assert r.extra["score"] >= cfg.threshold
    assert summary["samples"] == len(records)


def test_every_degree_reuses_the_scene_masks(mined):
    out, _ = mined
    records = load_metadata(out)
    by_scene: dict[str, list] = {}
    for r in records:
        by_scene.setdefault(r.extra["scene"], []).append(r)
    for scene, recs in by_scene.items():
        degrees = {r.extra["degree"] for r in recs}
        expected = {"original", "eta_0.3"} | ({"degree_1"} if scene != "ADE_train_clean3" else set())
        assert degrees == expected, scene
        assert len({tuple(t.mask_path for t in r.textures) for r in recs}) == 1


def test_split_is_by_scene(mined):
    out, _ = mined
    records = load_metadata(out)
    splits: dict[str, set] = {}
    for r in records:
        splits.setdefault(r.extra["scene"], set()).add(r.extra["split"])
    assert all(len(s) == 1 for s in splits.values())
    train = {r.id for r in load_metadata(out / "metadata_train.json")}
    val = {r.id for r in load_metadata(out / "metadata_val.json")}
    assert train.isdisjoint(val) and train | val == {r.id for r in records}


def test_scene_split_function():
    ids = [f"ADE_train_{i:08d}" for i in range(4000)]
    val = [i for i in ids if scene_split(i, 0, 0.1) == "val"]
    assert 300 < len(val) < 500
    assert [scene_split(i, 0, 0.1) for i in ids[:50]] == [scene_split(i, 0, 0.1) for i in ids[:50]]
    assert [scene_split(i, 1, 0.1) for i in ids] != [scene_split(i, 0, 0.1) for i in ids]
    assert all(scene_split(i, 0, 0.0) == "train" for i in ids[:100])


def test_corrupt_inputs_are_rejected_with_reasons(mined):
    out, _ = mined
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert "truncated" in rejected["ADE_train_badimage"]["reason"]
    assert "not a readable label map" in rejected["ADE_train_badlabel"]["reason"]
    assert "class id 200" in rejected["ADE_train_badclass"]["reason"]
    assert "label map not found" in rejected["ADE_train_nolabel"]["reason"]
    assert "64x96" in rejected["ADE_train_clean3__degree_1"]["reason"]
    assert all(r["path"] in r["reason"] for r in rejected.values())
    ids = {r.id for r in load_metadata(out)}
    assert not ids & set(rejected)


def test_reports(mined):
    out, summary = mined
    assert summary["status"] == {"kept": 3, "low_score": 2, "rejected": 4}
    assert sum(int(v) for v in summary["scenes_by_k"].values()) == 3
    # every scene with a readable label map: the 5 valid ones and badimage (its JPEG fails only later)
    assert sum(summary["score_histogram"]["counts"]) == 6
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "score_histogram.png").read_bytes()[:4] == b"\x89PNG"
    sheet = (out / "review" / "contact_sheet.html").read_text()
    for r in load_metadata(out):
        assert f"{r.id}.jpg" in sheet and (out / "review" / f"{r.id}.jpg").exists()


def test_arrow_export(mined):
    import datasets

    out, summary = mined
    dd = datasets.load_from_disk(str(out / "hf_dataset"))
    assert sum(len(d) for d in dd.values()) == summary["samples"]
    row = dd["train"][0] if len(dd["train"]) else dd["val"][0]
    assert row["k"] == len(row["masks"]) == len(row["descriptions"])
    assert row["image"].size == (fx.W, fx.H)


def test_training_dataset_reads_mined_output(mined):
    out, _ = mined
    training = pytest.importorskip("detecture.training.dataset")
    from detecture.training.config import DataConfig

    ds = training.TextureDataset(out, DataConfig(), seed=0, train=False)
    assert len(ds) == len(load_metadata(out))  # the training scan skipped nothing
    for i in range(len(ds)):
        item = ds[i]
        assert len(item.descriptions) == item.masks.shape[0] >= 2


def test_kill_resume_and_rerun_are_byte_identical(dataset, mined, tmp_path):
    reference, _ = mined
    out = tmp_path / "out"
    killer = textwrap.dedent(f"""
        import os, signal, sys
        from detecture.miner import orchestrate as run
        real, calls = run.write_state, []
        def write_state(path, state):
            calls.append(path)
            if len(calls) == 5:  # scene 5 (clean2) has its images and masks written, not its result file
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, state)
        run.write_state = write_state
        from detecture.cli import main
        sys.exit(main({mine_args(dataset, out, '--workers', '1', '--arrow')!r}))
    """)
    killed = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list((out / "mine_state" / "scenes").glob("*.json"))) == 4
    assert (out / "masks" / "ADE_train_clean2_1.png").exists() and not (out / "metadata.json").exists()
    # what workers killed inside an atomic write (Ctrl+C ends them with SIGTERM) or a kill while assembling leave
    leftovers = ["masks/.ADE_train_clean2_2.png.k1ll3d00.tmp", "images/.ADE_train_clean3__eta_0.3.jpg.k1ll3d00.tmp",
                 "mine_state/scenes/.ADE_train_fragment.json.k1ll3d00.tmp", ".metadata.json.k1ll3d00.tmp"]
    for name in leftovers:
        (out / name).write_bytes(b"half")

    resumed = cli(*mine_args(dataset, out, "--workers", "2", "--arrow"))
    assert resumed.returncode == 0, resumed.stderr
    assert "5 to do" in resumed.stderr  # 9 scenes, 4 finished before the kill
    assert outputs(out) == outputs(reference)
    assert not list(out.rglob("*.tmp"))

    state_times = {p: p.stat().st_mtime_ns for p in (out / "mine_state" / "scenes").iterdir()}
    again = cli(*mine_args(dataset, out, "--arrow"))
    assert again.returncode == 0, again.stderr
    assert "0 to do" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "mine_state" / "scenes").iterdir()} == state_times
    assert outputs(out) == outputs(reference)


def test_a_share_removes_only_its_own_scenes_leftovers(tmp_path):
    """The shares of a job array write into one --out at once: a share starting removes what a killed run left for
    its own scenes, never a temporary of another share's scene (that share may be writing it right now)."""
    ade, _ = fx.build(tmp_path / "ade", with_textured=False)
    out = tmp_path / "out"
    mine(MineOptions(source="ade20k", root=ade, out=out, workers=1, limit=1))  # share 1/2 of the first 2 scenes...
    (out / "mine_state" / "scenes" / "ADE_train_astronaut.json").unlink()  # ...as a run killed before its result
    mine_one = (out / "masks" / ".ADE_train_astronaut_1.png.k1ll3d00.tmp", out / "images" / ".ADE_train_astronaut"
                ".jpg.k1ll3d00.tmp")
    not_mine = out / "masks" / ".ADE_train_badclass_1.png.wr1t1ng0.tmp"
    for path in (*mine_one, not_mine):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    mine(MineOptions(source="ade20k", root=ade, out=out, workers=1, limit=2, shard=Shard.parse("1/2")))
    assert not any(p.exists() for p in mine_one) and not_mine.exists()


def test_changed_settings_refuse_to_resume(dataset, mined, tmp_path):
    import shutil

    out, _ = mined
    ade, textured = dataset
    with pytest.raises(InputError, match="different settings.*threshold"):
        mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1, threshold=50))
    # another dataset into the same output would mix the two: another --root, or another set of --textured-root
    other_ade, other_textured = shutil.copytree(ade, tmp_path / "ade"), shutil.copytree(textured, tmp_path / "tex")
    for roots, changed in [((other_ade, (textured,)), "source.root"),
                           ((ade, (textured, other_textured)), "source.textured_roots"),
                           ((ade, (other_textured,)), "source.textured_roots")]:
        with pytest.raises(InputError, match=rf"different settings \({changed}\)"):
            mine(MineOptions(source="ade20k", root=roots[0], textured_roots=roots[1], out=out, workers=1))
    record = out / "mine_state" / "run.json"
    kept = record.read_bytes()
    record.write_bytes(b"\xff")  # damaged: one error naming it and the way out, not a traceback
    try:
        with pytest.raises(InputError, match=rf"run\.json: malformed .*; delete {re.escape(str(out))}.mine_state"):
            mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1))
    finally:
        record.write_bytes(kept)  # the module's mined output serves the other tests


def test_cli_errors_are_one_line(tmp_path):
    res = cli("mine", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr.strip().startswith("error:") and "not found" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "root").mkdir()
    res = cli("mine", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "expected" in res.stderr


@pytest.mark.parametrize("option", ["--device", "--qwen"])
def test_an_option_of_the_qwen_describer_is_refused_with_the_template_one(tmp_path, capsys, option):
    from detecture.cli import main

    (tmp_path / "root").mkdir()
    assert main(["mine", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "o"), option, "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {option} applies to describer 'qwen' only, not to 'template'"]
    assert not (tmp_path / "o").exists()


def test_invalid_descriptions_are_recorded_not_written(dataset, tmp_path):
    """The tiny random Qwen3-VL writes gibberish: every sample must be rejected with the reason, none written."""
    from dataclasses import replace

    qwen = pytest.importorskip("detecture.backbones.qwen")
    ade, _ = dataset
    cfg = load_config()
    describer = QwenDescriber(replace(cfg.describer, max_new_tokens=12), model=qwen.QwenVL.tiny())
    out = tmp_path / "qwen"
    summary = mine(MineOptions(source="ade20k", root=ade, out=out, workers=2, describer="qwen"), describer=describer)
    assert summary["samples"] == 0 and load_metadata(out) == []
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    for scene in KEPT:
        assert "invalid description" in rejected[scene]["reason"]
    assert not (out / "images").exists() and not (out / "masks").exists()


def test_a_describer_model_that_cannot_load_stops_the_run_and_a_rerun_mines_every_scene(tmp_path, tiny_model_dirs,
                                                                                         capsys):
    """A Qwen model path that does not exist: one error line naming it and nothing recorded for any scene, rather
    than every kept scene recorded as a bad sample (which a re-run would skip for good); once the config names a
    model that loads, the same command mines the scenes (the tiny random model writes gibberish, so they are
    rejected for their descriptions, which shows they were described)."""
    import yaml

    from detecture.cli import main
    from detecture.miner.config import packaged_file

    ade, _ = fx.build(tmp_path / "ade", with_textured=False)
    missing, config, out = tmp_path / "no_such_model", tmp_path / "miner.yaml", tmp_path / "out"
    settings = yaml.safe_load((packaged_file("miner.yaml")).read_text())
    settings["describer"].update(qwen_model=str(missing), max_new_tokens=12)
    config.write_text(yaml.safe_dump(settings))
    argv = ["mine", "--root", str(ade), "--out", str(out), "--describer", "qwen", "--device", "cpu",
            "--config", str(config)]
    capsys.readouterr()
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0], errors
    assert not list(out.rglob("*.json")) and not (out / "rejected.jsonl").exists()

    settings["describer"]["qwen_model"] = str(tiny_model_dirs[0])
    config.write_text(yaml.safe_dump(settings))
    assert main(argv) == 0
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    for scene in KEPT:
        assert "invalid description" in rejected[scene]["reason"]


def test_qwen_names_the_describer_model_in_place_of_the_config(tmp_path, capsys):
    """--qwen is the model the config's describer.qwen_model would be: a path that does not exist is the one the
    load fails on (nothing is mined)."""
    from detecture.cli import main

    ade, _ = fx.build(tmp_path / "ade", with_textured=False)
    missing, out = tmp_path / "no_such_model", tmp_path / "out"
    capsys.readouterr()
    assert main(["mine", "--root", str(ade), "--out", str(out), "--describer", "qwen", "--device", "cpu",
                 "--qwen", str(missing)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0], errors
    assert not list(out.rglob("*.json"))


class Flaky:
    """Template describer that raises ``error`` on the one scene with sky (ADE_train_fragment), once."""

    name, in_worker = "template", True

    def __init__(self, error: BaseException):
        from detecture.miner.describers import TemplateDescriber

        self.inner, self.error = TemplateDescriber(load_config().describer), error

    def load(self):
        self.inner.load()

    def describe(self, image, rmap, regions):
        if self.error is not None and any(r.name == "sky" for r in regions):
            error, self.error = self.error, None
            raise error
        return self.inner.describe(image, rmap, regions)


def referenced_and_written(out: Path) -> tuple[set[str], set[str]]:
    """The images and masks the metadata names, and those under ``out``."""
    records = load_metadata(out)
    referenced = {r.image_path for r in records} | {t.mask_path for r in records for t in r.textures}
    written = {f"{folder}/{p.name}" for folder in ("images", "masks") if (out / folder).is_dir()
               for p in (out / folder).iterdir()}
    return referenced, written


def test_a_describer_data_error_rejects_that_image_and_the_run_goes_on(dataset, tmp_path):
    """The describer fails on one image of a scene: that image is recorded, named, and the scene's other images
    (its textured variants) are still mined."""
    ade, textured = dataset
    out = tmp_path / "flaky"
    summary = mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1),
                   describer=Flaky(InputError("odd region layout")))
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    original = ade / "images" / "training" / "ADE_train_fragment.jpg"
    assert rejected["ADE_train_fragment"] == {"id": "ADE_train_fragment", "path": str(original),
                                              "reason": f"{original}: odd region layout"}
    records = load_metadata(out)
    assert {r.extra["degree"] for r in records if r.extra["scene"] == "ADE_train_fragment"} == {"eta_0.3", "degree_1"}
    assert {r.extra["scene"] for r in records} == KEPT and summary["status"]["kept"] == 3
    referenced, written = referenced_and_written(out)
    assert written == referenced


def test_a_scene_rejected_partway_leaves_none_of_its_files(dataset, tmp_path, monkeypatch):
    """A data error after a scene wrote images and a mask (here on its second mask) rejects the scene and deletes
    what it wrote: no record would name those files."""
    from detecture.errors import DatasetError
    from detecture.miner import orchestrate

    real_save = orchestrate.save_binary_mask

    def save_binary_mask(path, mask):
        if Path(path).name == "ADE_train_clean2_2.png":
            raise DatasetError(f"{path}: unusable mask")
        real_save(path, mask)

    monkeypatch.setattr(orchestrate, "save_binary_mask", save_binary_mask)
    ade, textured = dataset
    out = tmp_path / "out"
    mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1))
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert "unusable mask" in rejected["ADE_train_clean2"]["reason"]
    assert {r.extra["scene"] for r in load_metadata(out)} == KEPT - {"ADE_train_clean2"}
    referenced, written = referenced_and_written(out)
    assert written == referenced


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device", "images/x.jpg"),
                                   RuntimeError("describer bug"),
                                   ModelAccessError("could not load Qwen3-VL model 'm': disk full while downloading"),
                                   RunStopped("x: stopped elsewhere; mine stopped unfinished")],
                         ids=["disk-full", "bug", "model-lost", "stopped"])
def test_an_environment_or_programming_error_stops_the_run_and_a_rerun_finishes_it(dataset, mined, tmp_path, error):
    """Disk full, a bug, a model that cannot load or a stop raised inside a scene's work: the run stops, the scene is
    not recorded as rejected, and the re-run mines it, giving the same dataset as an uninterrupted run."""
    reference, _ = mined
    ade, textured = dataset
    out = tmp_path / "out"
    opts = MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1, arrow=True)
    expected = (RunStopped, "images/x.jpg: No space left on device; mine stopped unfinished") \
        if isinstance(error, OSError) else (type(error), re.escape(str(error)))
    with pytest.raises(expected[0], match=expected[1]):
        mine(opts, describer=Flaky(error))
    assert not (out / "mine_state" / "scenes" / "ADE_train_fragment.json").exists()
    assert not (out / "metadata.json").exists()
    mine(opts)
    assert outputs(out) == outputs(reference)


def test_a_label_map_the_system_cannot_read_stops_the_run_and_is_mined_on_the_rerun(dataset, tmp_path, monkeypatch,
                                                                                     capsys):
    """An I/O error (or permission denied) reading a label map is the environment's fault: exit 3 with one line
    naming the file, nothing recorded for the scene; once the file reads again, the re-run mines it."""
    import builtins

    from detecture.cli import main

    ade, _ = dataset
    label = ade / "annotations" / "training" / "ADE_train_clean2.png"
    real_open = builtins.open

    def failing_open(file, *args, **kwargs):
        if str(file) == str(label):
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(file))
        return real_open(file, *args, **kwargs)

    out = tmp_path / "out"
    argv = ["mine", "--root", str(ade), "--out", str(out), "--workers", "1"]
    monkeypatch.setattr(builtins, "open", failing_open)
    capsys.readouterr()
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {label}: Input/output error; mine stopped unfinished"), err
    assert not (out / "mine_state" / "scenes" / "ADE_train_clean2.json").exists()
    monkeypatch.setattr(builtins, "open", real_open)
    assert main(argv) == 0
    assert "ADE_train_clean2" in {r.extra["scene"] for r in load_metadata(out)}
    assert "ADE_train_clean2" not in (out / "rejected.jsonl").read_text()


def test_a_file_name_that_is_not_utf8_is_rejected_when_listed(tmp_path, capsys):
    """Ids come from file names and go into UTF-8 JSON: ``bad\\xff.jpg`` is listed in rejected.jsonl with its name
    escaped, nothing of it is written, and the run (and its re-run) goes on."""
    from detecture.cli import main

    ade, _ = fx.build(tmp_path / "ade", with_textured=False)
    bad = os.fsdecode(b"bad\xff")
    for folder, suffix in (("images", ".jpg"), ("annotations", ".png")):
        clean2 = (ade / folder / "training" / f"ADE_train_clean2{suffix}").read_bytes()
        (ade / folder / "training" / f"{bad}{suffix}").write_bytes(clean2)
    out = tmp_path / "out"
    for _ in range(2):
        assert main(["mine", "--root", str(ade), "--out", str(out), "--workers", "1"]) == 0
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    [record] = [r for r in rejected if r["id"].startswith("bad")]
    shown = str(ade / "images" / "training" / "bad\\xff.jpg")
    assert record == {"id": "bad\\xff", "path": shown, "reason": f"{shown}: file name is not valid UTF-8; rename the "
                      "file to mine it", "kind": "undecodable_name"}
    assert {r.extra["scene"] for r in load_metadata(out)} == {"ADE_train_clean2", "ADE_train_clean3",
                                                              "ADE_train_fragment"}
    assert not [p for p in out.rglob("*") if not p.name.isascii()]
    assert "undecodable_name" in capsys.readouterr().out


def test_input_folders_whose_names_are_not_utf8_are_mined(tmp_path, capsys):
    """--root and --textured-root under a Latin-1 folder name: the paths recorded in run.json and rejected.jsonl
    carry the name escaped (\\xe9), and the run and its re-run finish instead of failing to write UTF-8 JSON."""
    from detecture.cli import main

    base = Path(os.fsdecode(bytes(tmp_path) + b"/d\xe9j\xe0"))
    base.mkdir()
    ade, _ = fx.build(base, with_textured=False)
    flat = fx.build_flat(base, ade)
    out = tmp_path / "out"
    argv = ["mine", "--root", str(ade), "--textured-root", str(flat.release), "--out", str(out), "--workers", "1"]
    for _ in range(2):
        assert main(argv) == 0
    shown = str(tmp_path / "d\\xe9j\\xe0")
    run = json.loads((out / "mine_state" / "run.json").read_text(encoding="utf-8"))
    assert run["source"]["root"].startswith(shown) and run["source"]["textured_roots"][0].startswith(shown)
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["id"] for r in rejected} >= {"ADE_train_badimage", "ADE_train_badlabel", "ADE_train_nolabel__0.3"}
    assert all(r["path"].startswith(shown) and r["path"] in r["reason"] for r in rejected)
    assert {r.extra["scene"] for r in load_metadata(out)} == KEPT | {fx.COPY_ONLY}


def test_rejections_are_data_not_failures(dataset, mined, capsys):
    """Exit status 0 with corrupt inputs rejected (they are what the miner filters); the count is on the last line.
    Re-running on the finished output only re-assembles it, so this costs no mining."""
    from detecture.cli import main

    out, summary = mined
    assert summary["rejected_samples"] > 0
    assert main(mine_args(dataset, out, "--workers", "1")) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"{summary['samples']} sample(s) kept, {summary['rejected_samples']} rejected")


def test_an_arrow_export_killed_midway_leaves_the_previous_copy_whole(mined, tmp_path, monkeypatch):
    import shutil

    import datasets

    from detecture.data.layouts import read_records
    from detecture.miner.hub import export_dataset

    out = tmp_path / "copy"
    shutil.copytree(mined[0], out)
    before = datasets.load_from_disk(str(out / "hf_dataset"))

    def killed(self, path, **kwargs):
        (Path(path) / "train").mkdir(parents=True)
        (Path(path) / "dataset_dict.json").write_text('{"splits": ["train"]}')  # a readable start, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", killed)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(out, read_records(out))
    after = datasets.load_from_disk(str(out / "hf_dataset"))
    assert {s: len(d) for s, d in after.items()} == {s: len(d) for s, d in before.items()}
    assert [p.name for p in out.iterdir() if p.name.startswith(".hf_dataset")] == []


def test_a_rerun_removes_the_copies_a_killed_arrow_export_left(dataset, mined, tmp_path):
    """Killed by SIGKILL inside the Arrow save (a whole hidden copy written, not renamed in), then again between the
    two renames that replace hf_dataset/ (the previous copy moved aside, hf_dataset/ missing): the re-run puts a
    complete hf_dataset/ in place and leaves none of the hidden copies."""
    import shutil

    import datasets

    out = tmp_path / "copy"
    shutil.copytree(mined[0], out)
    argv = mine_args(dataset, out, "--workers", "1", "--arrow")
    kill_inside_save = """
        import datasets
        real = datasets.DatasetDict.save_to_disk
        def save_to_disk(self, path, **kwargs):
            real(self, path, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        datasets.DatasetDict.save_to_disk = save_to_disk
    """
    kill_between_renames = """
        real = os.replace
        def replace(source, target):
            real(source, target)
            if os.path.basename(target) == ".hf_dataset.old":
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = replace
    """
    for patch in (kill_inside_save, kill_between_renames):
        script = "import os, signal, sys\n" + textwrap.dedent(patch) + textwrap.dedent(f"""
            from detecture.cli import main
            sys.exit(main({argv!r}))
        """)
        killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".hf_dataset")]  # what the kills left
    assert not (out / "hf_dataset").exists()

    mine(MineOptions(source="ade20k", root=dataset[0], textured_roots=(dataset[1],), out=out, workers=1, arrow=True))
    assert [p.name for p in out.iterdir() if p.name.startswith(".hf_dataset")] == []
    exported = datasets.load_from_disk(str(out / "hf_dataset"))
    assert sum(len(d) for d in exported.values()) == len(load_metadata(out))


def test_a_scene_whose_output_names_would_be_too_long_is_rejected_and_the_rest_mined(tmp_path, capsys):
    """A legal file name as long as the file system allows (``<stem>.jpg``) gives output names that are not
    (``<stem>_1.png``): that scene is listed as rejected, saying why, and the run and its re-run finish."""
    from PIL import Image

    from detecture.cli import main

    root, out = tmp_path / "data", tmp_path / "out"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    long_stem = "x" * (os.pathconf(tmp_path, "PC_NAME_MAX") - len(".jpg"))
    image, label = fx.scenes()["ADE_train_clean2"]
    for stem in ("short_scene", long_stem):
        Image.fromarray(image).save(root / "images" / f"{stem}.jpg")
        Image.fromarray(label, mode="L").save(root / "labels" / f"{stem}.png")
    argv = ["mine", "--source", "folder", "--root", str(root), "--out", str(out), "--workers", "1"]
    for _ in range(2):
        assert main(argv) == 0, capsys.readouterr().err
    assert {r.extra["scene"] for r in load_metadata(out)} == {"short_scene"}
    [record] = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert record["id"] == long_stem and record["kind"] == "name_too_long"
    assert record["path"] == str(root / "images" / f"{long_stem}.jpg") and "too long" in record["reason"]
    assert not [p for p in out.rglob("*") if long_stem in p.name]


def test_only_settings_that_shape_scenes_refuse_to_resume(dataset, mined, tmp_path):
    """The split, the report and the config's comments shape the merge step alone: changing them re-assembles the
    finished scenes without mining any again. A scoring weight shapes every score: refused, naming that key. An
    output folder whose run.json records the config file's digest resumes under the same file."""
    import hashlib
    import shutil

    import yaml

    from detecture.miner.config import packaged_file

    out = tmp_path / "copy"
    shutil.copytree(mined[0], out)
    ade, textured = dataset
    text = (packaged_file("miner.yaml")).read_text()
    settings = yaml.safe_load(text)

    def run_with(config_text: str) -> dict | None:
        config = tmp_path / "miner.yaml"
        config.write_text(config_text)
        return mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1,
                                config=config))

    states = out / "mine_state" / "scenes"
    state_times = {p: p.stat().st_mtime_ns for p in states.iterdir()}
    assert mined[1]["split_scenes"].get("val")
    assembly_only = {**settings, "split": {"val_fraction": 0.0}, "report": {"contact_sheet_samples": 2}}
    summary = run_with("# another comment\n" + yaml.safe_dump(assembly_only))
    assert "val" not in summary["split_scenes"]
    assert {p: p.stat().st_mtime_ns for p in states.iterdir()} == state_times

    weights = {**settings["scoring"]["weights"], "balance": settings["scoring"]["weights"]["balance"] + 1}
    scoring = {**settings, "scoring": {**settings["scoring"], "weights": weights}}
    with pytest.raises(InputError, match=r"different settings \(scoring\.weights\.balance\)"):
        run_with(yaml.safe_dump(scoring))

    record = out / "mine_state" / "run.json"
    current = json.loads(record.read_text())
    whole_file = {"config_sha256": hashlib.sha256(text.encode()).hexdigest(), "threshold": current["threshold"],
                  "vocabulary_sha256": current["vocabulary_sha256"], "source": current["source"],
                  "describer": "template"}
    record.write_text(json.dumps(whole_file))
    run_with(text)
    assert json.loads(record.read_text()) == current
    record.write_text(json.dumps({**whole_file, "config_sha256": "0" * 64}))
    with pytest.raises(InputError, match=r"different settings \(config_sha256\)"):
        run_with(text)


def test_images_added_to_or_removed_from_a_textured_root_are_mined_on_the_rerun(tmp_path):
    """A degree folder unzipped after a run: the re-run mines the scene that gained an image, and only that scene,
    giving the dataset a fresh run gives; the file removed again, the next re-run drops its sample and image. Result
    files without the list of images they were made for are still read: an unchanged kept scene is not redone."""
    import shutil
    from dataclasses import replace

    ade, textured = fx.build(tmp_path / "ade")
    out = tmp_path / "out"
    opts = MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1)
    mine(opts)
    before = outputs(out)
    states = out / "mine_state" / "scenes"
    for path in states.iterdir():  # as a result file without the list of images is
        state = json.loads(path.read_text())
        state.pop("candidates", None)
        path.write_text(json.dumps(state))
    kept_times = {scene: (states / f"{scene}.json").stat().st_mtime_ns for scene in KEPT}

    added = textured / "eta_0.5" / "images" / "training" / "ADE_train_clean2.jpg"
    added.parent.mkdir(parents=True)
    shutil.copy(textured / "eta_0.3" / "images" / "training" / "ADE_train_clean3.jpg", added)
    mine(opts)
    assert "ADE_train_clean2__eta_0.5" in {r.id for r in load_metadata(out)}
    assert {scene: (states / f"{scene}.json").stat().st_mtime_ns for scene in KEPT - {"ADE_train_clean2"}} == \
        {scene: t for scene, t in kept_times.items() if scene != "ADE_train_clean2"}
    fresh = tmp_path / "fresh"
    mine(replace(opts, out=fresh))
    assert outputs(out) == outputs(fresh)

    added.unlink()
    mine(opts)
    assert outputs(out) == before


def _held_run(args: list[str], tmp_path: Path, when: str = "True") -> subprocess.Popen:
    """``detecture mine args`` in another process, held inside the describer of the first scene for which ``when``
    (an expression of ``regions``) holds until ``tmp_path / "release"`` exists; returned once it is held there (a live
    claimant of that scene)."""
    import time

    started, release = tmp_path / "started", tmp_path / "release"
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from detecture.miner import describers
        real = describers.TemplateDescriber.describe
        def describe(self, image, rmap, regions):
            if {when}:
                Path({str(started)!r}).touch()
                deadline = time.monotonic() + 100
                while not Path({str(release)!r}).exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return real(self, image, rmap, regions)
        describers.TemplateDescriber.describe = describe
        from detecture.cli import main
        sys.exit(main({args!r}))
    """)
    run = subprocess.Popen([sys.executable, "-c", holder], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 100
    while not started.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not started.exists():
        release.touch()
        raise AssertionError(run.communicate(timeout=100)[1])
    return run


def test_two_runs_sharing_an_out_mine_each_scene_once(dataset, mined, tmp_path):
    """Run A holds a scene (its describer waits on it); run B, started into the same --out meanwhile, mines the
    scenes A has not reached, skips A's and leaves the merge to A, which, once released, finds every scene done and
    writes the same dataset as one run."""
    out, release = tmp_path / "out", tmp_path / "release"
    a = _held_run(mine_args(dataset, out, "--workers", "1"), tmp_path, 'any(r.name == "sky" for r in regions)')
    try:
        ade, textured = dataset
        b = mine(MineOptions(source="ade20k", root=ade, textured_roots=(textured,), out=out, workers=1))
        assert b == MergeLeft(scenes=1, pid=a.pid, host=socket.gethostname())  # A, still mining a scene, merges
        assert not (out / "mine_state" / "scenes" / "ADE_train_fragment.json").exists()
        assert not (out / "metadata.json").exists()
    finally:
        release.touch()
        _, a_err = a.communicate(timeout=100)
    assert a.returncode == 0, a_err
    assert outputs(out) == outputs(mined[0])
    assert not list((out / "mine_state" / "claims").iterdir())


def test_a_run_that_finds_scenes_held_by_a_live_shard_run_stops_unfinished_and_a_rerun_merges(dataset, mined,
                                                                                              tmp_path, capsys):
    """A --shard run never merges: a run without --shard that finishes while one still holds scenes cannot leave the
    merge to it. It says the merged dataset was not written, naming the shard, exits 3 (unfinished; the same command
    completes it), and the same command run once the shard finished writes the dataset of one run."""
    from detecture.cli import main

    out, release = tmp_path / "out", tmp_path / "release"
    a = _held_run(mine_args(dataset, out, "--workers", "1", "--shard", "1/2"), tmp_path)
    try:
        capsys.readouterr()
        assert main(mine_args(dataset, out, "--workers", "1")) == 3
        err = capsys.readouterr().err.strip().splitlines()[-1]  # the last line: any log lines come before it
        assert err.startswith("error: "), err
        assert "merged dataset was not written" in err and f"the --shard 1/2 run (process {a.pid})" in err
        assert "run the same command again once they finish" in err
        assert not (out / "metadata.json").exists()
    finally:
        release.touch()
        _, a_err = a.communicate(timeout=100)
    assert a.returncode == 0, a_err
    assert main(mine_args(dataset, out, "--workers", "1")) == 0
    assert outputs(out) == outputs(mined[0])


@pytest.mark.parametrize("recorded, status, says", [
    ({"merges": True}, 0, "is still mining 1 scene(s) and writes the merged dataset when it finishes"),
    ({"merges": False, "shard": "2/3"}, 3, "which do not write it: the --shard 2/3 run (process {pid})"),
    ({}, 3, "process {pid} (its claim does not say whether it merges)"),  # a claim written before claims said
])
def test_a_finishing_run_leaves_the_merge_only_to_a_live_run_that_merges(dataset, tmp_path, capsys, recorded,
                                                                          status, says):
    """A scene another live process claimed: the finishing run leaves the merge to that run only where its claim
    says it merges (and says so on stdout, status 0); a --shard run's claim, or one that does not say, stops the run
    unfinished (status 3) with one line naming it, never a silent 0 that leaves no merged dataset."""
    from detecture.cli import main
    from detecture.miner.names import state_name

    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        claim = out / "mine_state" / "claims" / state_name("ADE_train_clean2")
        claim.parent.mkdir(parents=True)
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, **recorded}), encoding="utf-8")
        capsys.readouterr()
        assert main(mine_args(dataset, out, "--workers", "1")) == status
        captured = capsys.readouterr()
        line = (captured.out if status == 0 else captured.err).strip().splitlines()[-1]
        assert says.format(pid=other.pid) in line
        if status:
            assert line.startswith("error: ") and line.endswith("run the same command again once they finish")
        assert not (out / "metadata.json").exists()
        assert not (out / "mine_state" / "scenes" / "ADE_train_clean2.json").exists()
    finally:
        other.kill()
        other.wait()
    assert main(mine_args(dataset, out, "--workers", "1")) == 0  # the claim's process gone: taken over, merged
    assert (out / "metadata.json").exists()
