"""Textured-ADE20K as TextureSAM releases it: flat folders, the degree in the file name, several folders merged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from detecture.data.metadata import load_metadata, load_sample
from detecture.errors import DatasetError, InputError
from detecture.miner.textured import degree_label, load_mapping, open_source, parse_degrees, parse_strength

import miner_fixture as fx

REPO = Path(__file__).resolve().parents[1]
KEPT = {"ADE_train_clean2", "ADE_train_clean3", "ADE_train_fragment", fx.COPY_ONLY}


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat")
    ade, _ = fx.build(root, with_textured=False)
    return ade, fx.build_flat(root, ade)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "detecture", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ), timeout=180)


def mine_flat(flat, out: Path, *extra: str) -> subprocess.CompletedProcess:
    ade, rel = flat
    res = cli("mine", "--root", str(ade), "--textured-root", str(rel.release), "--textured-root", str(rel.full),
              "--out", str(out), "--workers", "1", *extra)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def mined(flat, tmp_path_factory):
    out = tmp_path_factory.mktemp("mined") / "out"
    mine_flat(flat, out)
    return out


def rejected_by_name(out: Path) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}


def test_strength_is_read_in_both_spellings():
    assert parse_strength("0_3") == parse_strength("0.3") == 0.3
    assert parse_strength("1.0") == parse_strength("1") == 1.0
    assert parse_strength("0_25") == 0.25
    for bad in ("", "_high", "0_3_1", "0.3.1", "-1", "1e-1"):
        assert parse_strength(bad) is None, bad
    assert degree_label(parse_strength("0_1")) == degree_label(parse_strength("0.1")) == "0.1"
    assert degree_label(1) == "1.0"
    assert parse_degrees("1.0, 0_3,0.3") == (0.3, 1.0)
    with pytest.raises(InputError, match="'high' is not a strength"):
        parse_degrees("0.3,high")


def test_flat_index_finds_every_variant_and_lists_every_unusable_file(flat):
    ade, rel = flat
    index = open_source("ade20k", ade, textured_roots=[rel.release, rel.full]).index()
    found = {s.id: {v.degree for v in s.variants} for s in index.scenes if s.variants}
    assert found == rel.variants
    assert [s.id for s in index.scenes] == sorted(s.id for s in index.scenes)
    by_id = {s.id: s for s in index.scenes}
    assert by_id[fx.COPY_ONLY].image == rel.release / f"{fx.COPY_ONLY}.jpg"  # ADE20K lacks it: the copy is used
    assert by_id["ADE_train_clean2"].image == ade / "images" / "training" / "ADE_train_clean2.jpg"
    clean2 = {v.degree: v.image for v in by_id["ADE_train_clean2"].variants}
    assert clean2["0.1"] == rel.release / "ADE_train_clean2_textured_degree0_1.jpg"  # first folder wins
    assert clean2["1.0"] == rel.full / "ADE_train_clean2_textured_degree1.0.jpg"
    assert {Path(r["path"]).name: r["kind"] for r in index.rejected} == rel.rejected
    assert all(r["path"] in r["reason"] for r in index.rejected)
    assert index.counts["rejected"] == dict(Counter(rel.rejected.values()))
    assert index.counts["ignored"]["json"] == rel.json_files
    assert index.counts["variants"] == sum(len(d) for d in rel.variants.values())
    assert index.counts["base_images_from_textured"] == 1


def test_degrees_select_strengths(flat):
    ade, rel = flat
    scenes = open_source("ade20k", ade, textured_roots=[rel.release, rel.full], degrees=(0.3, 1.0)).scenes()
    found = {s.id: {v.degree for v in s.variants} for s in scenes if s.variants}
    assert found == {sid: d & {"0.3", "1.0"} for sid, d in rel.variants.items()}
    with pytest.raises(InputError, match=r"strength 0\.7.*found: 0\.1, 0\.3, 1\.0"):
        open_source("ade20k", ade, textured_roots=[rel.release, rel.full], degrees=(0.3, 0.7)).index()
    with pytest.raises(InputError, match="need --textured-root"):
        open_source("ade20k", ade, degrees=(0.3,))


def test_mapping_names_scene_and_strength(flat, tmp_path):
    ade, rel = flat
    index = open_source("ade20k", ade, textured_roots=[rel.release, rel.full], mapping=rel.mapping).index()
    clean2 = next(s for s in index.scenes if s.id == "ADE_train_clean2")
    assert {v.degree: v.image for v in clean2.variants}["0.5"] == rel.full / fx.MAPPED_FILE
    assert fx.MAPPED_FILE not in {Path(r["path"]).name for r in index.rejected}
    assert index.counts["mapping_entries_without_file"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"a.jpg": {"base_ade20k_id": "x"}}))
    with pytest.raises(InputError, match=f"{bad}: entry 'a.jpg' needs"):
        load_mapping(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        load_mapping(bad)
    for text, why in (("[" * 100_000 + "]" * 100_000, "nested too deeply"), ('{"a": ' + "9" * 5000 + "}", "digits")):
        bad.write_text(text)
        with pytest.raises(InputError, match=f"{bad}: malformed mapping file .*{why}"):
            load_mapping(bad)


def test_flat_and_nested_folders_merge(flat, tmp_path):
    ade, rel = flat
    nested = tmp_path / "eta_0.7" / "images" / "training"
    nested.mkdir(parents=True)
    Image.new("RGB", (fx.W, fx.H)).save(nested / "ADE_train_clean3.jpg")
    scenes = {s.id: s for s in open_source("ade20k", ade, textured_roots=[tmp_path, rel.release]).scenes()}
    assert {v.degree for v in scenes["ADE_train_clean3"].variants} == {"eta_0.7", "0.1", "0.3"}


def test_a_folder_mixing_flat_images_and_a_degree_folder_is_refused_naming_it(flat, tmp_path):
    """One stray sub-folder with images/ inside a flat folder: read as nested, every flat image would be left out
    unlisted, so the folder is refused with one line naming it and the sub-folder, before anything is mined."""
    from detecture.cli import main

    ade, rel = flat
    mixed = tmp_path / "ADE20K_0.3"
    mixed.mkdir()
    for name in ("ADE_train_clean2_textured_degree0_3.jpg", "ADE_train_clean3_textured_degree0_3.jpg"):
        (mixed / name).write_bytes((rel.release / name).read_bytes())
    (mixed / "old_copy" / "images").mkdir(parents=True)
    Image.new("RGB", (fx.W, fx.H)).save(mixed / "old_copy" / "images" / "ADE_train_clean2.jpg")
    with pytest.raises(DatasetError, match=rf"{mixed}: holds both degree folders with images/ \(old_copy\) and 2 "
                                           r"image\(s\) of a flat folder"):
        open_source("ade20k", ade, textured_roots=[mixed]).index()
    out = tmp_path / "out"
    assert main(["mine", "--root", str(ade), "--textured-root", str(mixed), "--out", str(out)]) == 2
    assert not out.exists()


def test_textured_names_that_are_not_utf8_are_rejected_when_listed(flat, tmp_path):
    """In a flat or a nested folder, a name that is not UTF-8 is listed, escaped, and never becomes a scene or a
    variant (its id could not be written to the JSON outputs)."""
    ade, _ = flat
    nested = tmp_path / "nested"
    layouts = ((tmp_path / "flat", tmp_path / "flat", "ADE_train_clean3_textured_degree0_3", "ADE_train_clean2_x"),
               (nested, nested / "eta_0.7" / "images", "ADE_train_clean3", "ADE_train_clean2"))
    for root, folder, good, bad in layouts:
        folder.mkdir(parents=True)
        Image.new("RGB", (fx.W, fx.H)).save(folder / f"{good}.jpg")
        Image.new("RGB", (fx.W, fx.H)).save(folder / os.fsdecode(bad.encode() + b"\xff.jpg"), format="JPEG")
        index = open_source("ade20k", ade, textured_roots=[root]).index()
        [record] = [r for r in index.rejected if r["kind"] == "undecodable_name"]
        assert record["path"] == f"{folder}/{bad}\\xff.jpg"
        json.dumps(record, ensure_ascii=False).encode("utf-8")
        assert all(v.image.name.isascii() for s in index.scenes for v in s.variants)
        assert sum(len(s.variants) for s in index.scenes) == 1


def test_mined_flat_release_has_one_sample_per_scene_and_degree(flat, mined):
    _, rel = flat
    records = load_metadata(mined)
    pairs = [(r.extra["scene"], r.extra["degree"]) for r in records]
    assert len(pairs) == len(set(pairs))
    expected = {(sid, d) for sid in KEPT for d in rel.variants[sid] | {"original"}}
    assert set(pairs) == expected
    for sid in KEPT:
        recs = [r for r in records if r.extra["scene"] == sid]
        assert len({tuple(t.mask_path for t in r.textures) for r in recs}) == 1  # every degree: the scene's masks
    lab = fx.scenes()["ADE_train_clean2"][1]
    for sid in ("ADE_train_clean2", fx.COPY_ONLY):  # both are the two-band wall / grass label map
        sample = load_sample(mined, next(r for r in records if r.extra["scene"] == sid))
        masks = sorted(m.astype(bool).tobytes() for m in sample.masks)
        assert masks == sorted([(lab == fx.WALL).tobytes(), (lab == fx.GRASS).tobytes()])


def test_unusable_files_are_listed_and_counted(flat, mined):
    _, rel = flat
    rejected = rejected_by_name(mined)
    for name, kind in rel.rejected.items():
        assert rejected[name]["kind"] == kind and rejected[name]["path"] in rejected[name]["reason"]
    nolabel = rejected["ADE_train_nolabel_textured_degree0_3.jpg"]  # a variant of a scene without annotation
    assert nolabel["id"] == "ADE_train_nolabel__0.3" and "label map not found" in nolabel["reason"]
    summary = json.loads((mined / "summary.json").read_text())
    assert summary["source_index"]["rejected"] == dict(Counter(rel.rejected.values()))
    assert summary["rejected_files"] == len(rel.rejected)


def test_rerun_is_byte_identical(flat, mined):
    before = {p: p.read_bytes() for p in sorted(mined.rglob("*")) if p.is_file() and p.suffix in (".json", ".jsonl")}
    res = mine_flat(flat, mined)
    assert "0 to do" in res.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_cli_degrees_filter(flat, tmp_path):
    _, rel = flat
    out = tmp_path / "out"
    mine_flat(flat, out, "--degrees", "0_3,1.0")
    pairs = {(r.extra["scene"], r.extra["degree"]) for r in load_metadata(out)}
    assert pairs == {(sid, d) for sid in KEPT for d in (rel.variants[sid] & {"0.3", "1.0"}) | {"original"}}
    res = cli("mine", "--root", str(flat[0]), "--out", str(tmp_path / "o2"), "--degrees", "0.3")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "--textured-root" in res.stderr


@pytest.mark.parametrize("with_textured", [True, False], ids=["textured", "no-textured"])
def test_an_empty_degrees_list_is_refused(flat, tmp_path, with_textured):
    """``--degrees ""`` selects no strength: one error line saying the list is empty, not a run over all of them."""
    ade, rel = flat
    extra = ["--textured-root", str(rel.release)] if with_textured else []
    res = cli("mine", "--root", str(ade), *extra, "--out", str(tmp_path / "out"), "--degrees", "")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: --degrees: empty list") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
