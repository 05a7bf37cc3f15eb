"""Source adapters: ADE20K layout, Textured-ADE20K degrees, the plain-folder source, and clear layout errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detecture.errors import DatasetError
from detecture.miner.orchestrate import MineOptions, mine
from detecture.miner.sources import ID_CLASH, ADE20KSource, FolderSource, read_label_png, without_id_clashes
from detecture.miner.textured import open_source
from detecture.miner.textured import TexturedVariants

import miner_fixture as fx


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return fx.build(tmp_path_factory.mktemp("src"))


def test_ade_layout_lists_scenes_sorted(dataset):
    ade, _ = dataset
    scenes = ADE20KSource(ade.parent).scenes()  # the folder *containing* ADEChallengeData2016 is accepted
    ids = [s.id for s in scenes]
    assert ids == sorted(ids) and "ADE_train_clean2" in ids and "ADE_train_nolabel" in ids
    clean = next(s for s in scenes if s.id == "ADE_train_clean2")
    assert clean.label == ade / "annotations" / "training" / "ADE_train_clean2.png" and clean.variants == ()


def test_of_two_images_of_one_scene_the_first_by_name_is_mined_and_the_other_listed(tmp_path, monkeypatch):
    """``A.jpg`` beside ``A.png``: whatever order the file system lists them in, the same one is the scene's image,
    and the other is listed as a duplicate naming the one used (it was dropped unlisted, by listing order)."""
    ade, _ = fx.build(tmp_path, with_textured=False)
    images = ade / "images" / "training"
    Image.open(images / "ADE_train_clean2.jpg").save(images / "ADE_train_clean2.png")
    real_scandir = os.scandir

    class Listing:
        def __init__(self, path, reverse):
            with real_scandir(path) as it:
                self.entries = sorted(it, key=lambda e: e.name, reverse=reverse)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    for reverse in (False, True):
        monkeypatch.setattr(os, "scandir", lambda path, reverse=reverse: Listing(path, reverse))
        index = ADE20KSource(ade).index()
        clean2 = next(s for s in index.scenes if s.id == "ADE_train_clean2")
        assert clean2.image == images / "ADE_train_clean2.jpg"
        [record] = index.rejected
        assert record["kind"] == "duplicate" and record["path"] == str(images / "ADE_train_clean2.png")
        assert "ADE_train_clean2.jpg" in record["reason"] and index.counts["rejected"] == {"duplicate": 1}


def test_object_info_names(tmp_path, dataset):
    ade, _ = dataset
    src = ADE20KSource(ade)
    assert src.class_names() == {}
    txt = "Idx\tRatio\tTrain\tVal\tName\n1\t0.15\t1\t1\twall\n2\t0.1\t1\t1\tbuilding, edifice\n"
    (ade / "objectInfo150.txt").write_text(txt)
    try:
        assert src.class_names() == {1: "wall", 2: "building"}
    finally:
        (ade / "objectInfo150.txt").unlink()
    (ade / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n1,0.15,1,1,wall\n2,0.1,1,1,building;edifice\n")
    try:
        assert src.class_names() == {1: "wall", 2: "building"}
        (ade / "objectInfo150.csv").write_text("no header\n")
        with pytest.raises(DatasetError, match="objectInfo150"):
            src.class_names()
    finally:
        (ade / "objectInfo150.csv").unlink()


def test_bad_layouts_say_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="images/training.*expected"):
        ADE20KSource(tmp_path)
    (tmp_path / "images" / "training").mkdir(parents=True)
    (tmp_path / "annotations" / "training").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        ADE20KSource(tmp_path).scenes()
    with pytest.raises(DatasetError, match="unknown source"):
        open_source("coco", tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        open_source("ade20k", tmp_path / "nope")


def test_textured_degrees(dataset, tmp_path):
    ade, textured = dataset
    src = open_source("ade20k", ade, textured_roots=[textured])
    assert isinstance(src, TexturedVariants)
    scene = next(s for s in src.scenes() if s.id == "ADE_train_clean2")
    assert [v.degree for v in scene.variants] == ["degree_1", "eta_0.3"]
    assert scene.variants[1].image == textured / "eta_0.3" / "images" / "training" / "ADE_train_clean2.jpg"
    with pytest.raises(DatasetError, match="no degree folders"):
        TexturedVariants(ADE20KSource(ade), [tmp_path]).scenes()
    nested = tmp_path / "nested" / "0.5" / "images"  # images/ without a subset folder, numeric degree name
    nested.mkdir(parents=True)
    Image.new("RGB", (fx.W, fx.H)).save(nested / "ADE_train_clean2.jpg")
    scenes = TexturedVariants(ADE20KSource(ade), [tmp_path / "nested"]).scenes()
    assert [v.degree for s in scenes for v in s.variants] == ["0.5"]


def test_folder_source(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(tmp_path / "labels" / "a.png")
    src = open_source("folder", tmp_path)
    assert isinstance(src, FolderSource)
    [scene] = src.scenes()
    assert src.read_label(scene).tolist() == np.ones((8, 8)).tolist()


def test_read_label_errors(tmp_path: Path):
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(rgb)
    with pytest.raises(DatasetError, match="mode RGB.*single-channel"):
        read_label_png(rgb)
    with pytest.raises(DatasetError, match="not found"):
        read_label_png(tmp_path / "missing.png")


def test_a_label_map_must_be_a_png(tmp_path: Path):
    """A 32-bit TIFF (or a lossy JPEG) saved under a .png name is not a class-index PNG, whatever its mode."""
    label = np.full((8, 8), 10, np.int32)
    label[0, 0] = 2_000_000_000
    tiff = tmp_path / "s1.png"
    Image.fromarray(label, mode="I").save(tiff, format="TIFF")
    with pytest.raises(DatasetError, match=f"{tiff}: label map is a TIFF file; expected a single-channel"):
        read_label_png(tiff)


def test_a_decompression_bomb_label_is_a_bad_label(tmp_path: Path):
    """A header claiming 50000 x 50000 px is refused on opening: one error naming the file, so the miner rejects the
    scene instead of crashing on every re-run."""
    bomb = fx.header_only_png(tmp_path / "bomb.png", 50_000, 50_000)
    with pytest.raises(DatasetError, match=f"{bomb}: refused as a possible decompression bomb"):
        read_label_png(bomb)


def test_cli_choices_match_the_registries():
    from detecture.commands.mine import DESCRIBER_NAMES, SOURCE_NAMES
    from detecture.miner.describers import DESCRIBERS
    from detecture.miner.sources import SOURCES

    assert sorted(SOURCE_NAMES) == sorted(SOURCES) and tuple(DESCRIBER_NAMES) == tuple(DESCRIBERS)


def test_a_scene_named_like_another_scenes_variant_is_listed_not_mined(tmp_path):
    """``X__eta_0.3`` as a scene of its own and scene ``X``'s variant ``eta_0.3`` would both be sample
    ``X__eta_0.3``, one image file: the later scene is rejected, naming the other, and the run goes on."""
    root, textured = tmp_path / "root", tmp_path / "textured" / "eta_0.3" / "images"
    for folder in (root / "images", root / "labels", textured):
        folder.mkdir(parents=True)
    for name in ("X", "X__eta_0.3", "Y"):
        Image.new("RGB", (8, 8)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.ones((8, 8), np.uint8)).save(root / "labels" / f"{name}.png")
    Image.new("RGB", (8, 8)).save(textured / "X.png")
    index = without_id_clashes(open_source("folder", root, textured_roots=[tmp_path / "textured"]).index())
    assert [scene.id for scene in index.scenes] == ["X", "Y"]
    [record] = [r for r in index.rejected if r["kind"] == ID_CLASH]
    assert record["id"] == "X__eta_0.3" and "an image of scene X;" in record["reason"]

    out = tmp_path / "out"
    mine(MineOptions(source="folder", root=root, textured_roots=(tmp_path / "textured",), out=out, workers=1))
    listed = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in listed if r.get("kind") == ID_CLASH] == ["X__eta_0.3"]
