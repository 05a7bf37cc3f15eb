"""Scoring components: hand-worked cases, monotonicity, and the config/vocabulary they read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detecture.errors import DatasetError, InputError
from detecture.miner.config import load_config, packaged_file
from detecture.miner.scoring import (
    ambiguous_penalty,
    balance_score,
    boundary_length_score,
    boundary_straightness_score,
    clutter_penalty,
    coverage_score,
    label_stats,
    region_count_score,
    score_scene,
)
from detecture.miner.vocabulary import load_vocabulary

WALL, SKY, FLOOR, GRASS, PERSON, CHAIR, CAR, CURTAIN, RUG = 1, 3, 4, 10, 13, 20, 21, 19, 29


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary(packaged_file("ade20k_classes.yaml"))


@pytest.fixture(scope="module")
def cfg():
    return load_config()


def two_surfaces(h: int = 96, w: int = 128) -> np.ndarray:
    lab = np.full((h, w), GRASS, np.uint8)
    lab[: h // 2] = WALL
    return lab


def test_label_stats_hand_worked():
    lab = np.array([[1, 1, 2], [1, 3, 2]], np.uint8)
    s = label_stats(lab, 4)
    assert s.area.tolist() == pytest.approx([0, 3 / 6, 2 / 6, 1 / 6])
    # horizontal edges: (1,2) in row 0; (1,3), (3,2) in row 1.  vertical edges: (1,3) in column 1.
    assert s.boundary[1, 2] == s.boundary[2, 1] == 1
    assert s.boundary[1, 3] == 2
    assert s.boundary[2, 3] == 1
    assert s.boundary.diagonal().sum() == 0


def test_label_stats_rejects_bad_maps():
    with pytest.raises(DatasetError, match="class id 200"):
        label_stats(np.full((4, 4), 200, np.uint8), 151)
    with pytest.raises(DatasetError, match="integer"):
        label_stats(np.zeros((4, 4), np.float32), 151)
    with pytest.raises(DatasetError, match="2-D"):
        label_stats(np.zeros((4, 4, 3), np.uint8), 151)


def test_a_huge_class_id_is_a_bad_label_found_without_counting_up_to_it():
    """Counting classes first would allocate one counter per id up to 2e9 (16 GB): a memory error, taken for an
    environment fault on every re-run, instead of this scene's bad label map."""
    import tracemalloc

    label = np.full((96, 128), 10, np.int32)
    label[0, 0] = 2_000_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="class id 2000000000; this vocabulary has ids 0..150"):
            label_stats(label, 151)
        assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    finally:
        tracemalloc.stop()


def test_region_count_score_shape():
    assert region_count_score(0, (2, 5)) == 0.0
    assert 0 < region_count_score(1, (2, 5)) < 1
    assert all(region_count_score(n, (2, 5)) == 1.0 for n in range(2, 6))
    assert region_count_score(6, (2, 5)) > region_count_score(7, (2, 5)) > region_count_score(9, (2, 5)) == 0.0


def test_balance_score():
    assert balance_score(np.array([0.3, 0.3])) == pytest.approx(1.0)
    assert balance_score(np.array([0.2, 0.2, 0.2])) == pytest.approx(1.0)
    assert balance_score(np.array([0.9, 0.1])) < balance_score(np.array([0.6, 0.4])) < 1.0
    assert balance_score(np.array([0.8])) == 0.0


def test_boundary_length_score(vocab, cfg):
    bounds = cfg.scoring.boundary_length
    assert boundary_length_score(label_stats(np.full((40, 40), WALL, np.uint8), 151), vocab, bounds) == 0.0
    assert boundary_length_score(label_stats(two_surfaces(), 151), vocab, bounds) == 1.0
    checker = np.where((np.indices((64, 64)).sum(axis=0) % 2) == 0, WALL, GRASS).astype(np.uint8)
    assert boundary_length_score(label_stats(checker, 151), vocab, bounds) == 0.0  # shredded, not a boundary
    # object-object and texture-object edges do not count
    lab = np.full((40, 40), PERSON, np.uint8)
    lab[:, 20:] = CHAIR
    assert boundary_length_score(label_stats(lab, 151), vocab, bounds) == 0.0


def test_boundary_straightness(vocab):
    h, w = 96, 128
    assert boundary_straightness_score(label_stats(two_surfaces(h, w), 151), vocab) == pytest.approx(1.0)
    diagonal = np.where(np.add.outer(np.arange(h), -np.arange(w) * h / w) < 0, WALL, GRASS).astype(np.uint8)
    assert boundary_straightness_score(label_stats(diagonal, 151), vocab) == pytest.approx(1.0, abs=0.02)
    saw = two_surfaces(h, w)
    for x in range(w):  # a sawtooth boundary with 8-px teeth
        saw[h // 2 - 8 : h // 2 + 8, x] = np.where(np.arange(16) < (x % 16), WALL, GRASS)
    ragged = boundary_straightness_score(label_stats(saw, 151), vocab)
    assert ragged < 0.7
    yy, xx = np.indices((h, w))
    blob = np.where((yy - 48) ** 2 + (xx - 64) ** 2 < 30**2, WALL, GRASS).astype(np.uint8)
    assert 0.4 < boundary_straightness_score(label_stats(blob, 151), vocab) < 0.6  # closed contour ~ 0.5
    assert boundary_straightness_score(label_stats(np.full((8, 8), WALL, np.uint8), 151), vocab) == 0.0


def test_coverage_and_penalties(vocab, cfg):
    sc = cfg.scoring
    clean = label_stats(two_surfaces(), 151)
    assert coverage_score(clean, vocab, sc.coverage) == 1.0
    assert clutter_penalty(clean, vocab, sc) == 0.0
    assert ambiguous_penalty(clean, vocab, sc) == 0.0
    half = two_surfaces()
    half[:, 64:] = PERSON  # half the image is an object: coverage 0.5 = the configured floor
    assert coverage_score(label_stats(half, 151), vocab, sc.coverage) == 0.0
    lab = two_surfaces()
    previous = 0.0
    for cls, box in ((PERSON, np.s_[10:20, 10:20]), (CHAIR, np.s_[60:70, 10:20]), (CAR, np.s_[60:80, 40:90])):
        lab[box] = cls
        now = clutter_penalty(label_stats(lab, 151), vocab, sc)
        assert now > previous
        previous = now
    amb = two_surfaces()
    amb[60:90, 20:100] = RUG
    assert ambiguous_penalty(label_stats(amb, 151), vocab, sc) > 0


def test_clean_scene_passes_and_clutter_lowers_score(vocab, cfg):
    lab = two_surfaces()
    clean = score_scene(label_stats(lab, 151), vocab, cfg.scoring).total
    assert clean >= cfg.threshold
    scores = [clean]
    for cls, box in ((PERSON, np.s_[50:80, 10:30]), (CHAIR, np.s_[55:90, 40:60]), (CAR, np.s_[20:45, 70:120])):
        lab = lab.copy()
        lab[box] = cls
        scores.append(score_scene(label_stats(lab, 151), vocab, cfg.scoring).total)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
    amb = two_surfaces()
    amb[60:90, 20:100] = CURTAIN
    assert score_scene(label_stats(amb, 151), vocab, cfg.scoring).total < clean


def test_single_texture_scene_is_not_kept(vocab, cfg):
    assert score_scene(label_stats(np.full((96, 128), SKY, np.uint8), 151), vocab, cfg.scoring).total < cfg.threshold


def test_weights_come_from_config(vocab, cfg):
    lab = two_surfaces()
    lab[50:80, 10:30] = PERSON
    stats = label_stats(lab, 151)
    no_penalty = replace(cfg.scoring, penalties={"clutter": 0, "ambiguous": 0})
    assert score_scene(stats, vocab, no_penalty).total > score_scene(stats, vocab, cfg.scoring).total


def test_vocabulary_covers_all_classes(vocab):
    assert vocab.n_classes == 151 and vocab.version >= 1
    kinds = vocab.is_texture.astype(int) + vocab.is_object + vocab.is_ambiguous
    assert kinds[0] == 0 and (kinds[1:] == 1).all()
    names = {n: i for i, n in enumerate(vocab.names)}
    for stuff in ("wall", "grass", "floor", "sky", "water", "sand", "road", "sea", "ceiling"):
        assert vocab.is_texture[names[stuff]], stuff
    for thing in ("person", "car", "chair", "bed", "lamp", "bottle", "clock"):
        assert vocab.is_object[names[thing]], thing
    assert vocab.names[150] == "flag" and vocab.names[45] == "chest of drawers"


def test_vocabulary_and_config_errors(tmp_path: Path):
    bad = tmp_path / "v.yaml"
    bad.write_text("version: 1\nclasses:\n  - {id: 1, name: wall, kind: stuff}\n")
    with pytest.raises(InputError, match="kind 'stuff'"):
        load_vocabulary(bad)
    with pytest.raises(InputError, match="not found"):
        load_vocabulary(tmp_path / "missing.yaml")
    text = (packaged_file("miner.yaml")).read_text()
    cfg_file = tmp_path / "miner.yaml"
    cfg_file.write_text(text.replace("max_regions: 5", "max_regions: 7"))
    with pytest.raises(InputError, match="max_regions"):
        load_config(cfg_file)
    cfg_file.write_text(text.replace("balance: 15", "balanse: 15"))
    with pytest.raises(InputError, match="weights"):
        load_config(cfg_file)
    cfg_file.write_text(text + "\nextra_key: 1\n")
    with pytest.raises(InputError, match="extra_key"):
        load_config(cfg_file)
