"""Region extraction invariants and the documented fragment rule."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from detecture.miner.config import load_config, packaged_file
from detecture.miner.regions import extract_regions, region_map
from detecture.miner.scoring import label_stats
from detecture.miner.vocabulary import load_vocabulary

import miner_fixture as fx

C = 151


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary(packaged_file("ade20k_classes.yaml"))


@pytest.fixture(scope="module")
def rcfg():
    return load_config().regions


def regions_of(label, vocab, rcfg):
    return extract_regions(label_stats(label, C), vocab, rcfg)


@pytest.mark.parametrize("scene", ["ADE_train_clean2", "ADE_train_clean3", "ADE_train_fragment"])
def test_invariants_on_fixture_scenes(scene, vocab, rcfg):
    _, label = fx.scenes()[scene]
    regions = regions_of(label, vocab, rcfg)
    assert rcfg.min_regions <= len(regions) <= rcfg.max_regions
    rmap = region_map(label, regions, C)
    masks = [rmap == k for k in range(1, len(regions) + 1)]
    assert (np.sum(masks, axis=0) <= 1).all()  # disjoint
    areas = [m.mean() for m in masks]
    assert all(a >= rcfg.min_area for a in areas)
    assert areas == sorted(areas, reverse=True)
    assert [r.area for r in regions] == pytest.approx(areas)
    assert not rmap[vocab.is_object[label] | vocab.is_ambiguous[label] | (label == 0)].any()


def test_fragment_is_absorbed_by_its_neighbour(vocab, rcfg):
    _, label = fx.scenes()["ADE_train_fragment"]  # sub-1 % earth patch entirely inside grass
    regions = regions_of(label, vocab, rcfg)
    grass = next(r for r in regions if r.name == "grass")
    assert fx.EARTH in grass.classes and grass.classes[0] == fx.GRASS
    assert all(fx.EARTH not in r.classes[:1] for r in regions)


def test_fragment_touching_no_region_is_dropped(vocab, rcfg):
    label = np.full((100, 100), fx.GRASS, np.uint8)
    label[:50] = fx.WALL
    label[60:80, 60:80] = fx.CHAIR
    label[68:72, 68:72] = fx.EARTH  # 0.16 %, surrounded by the chair
    regions = regions_of(label, vocab, rcfg)
    assert all(fx.EARTH not in r.classes for r in regions)
    assert not region_map(label, regions, C)[label == fx.EARTH].any()


def test_too_many_regions_keeps_the_largest(vocab, rcfg):
    label = np.zeros((100, 120), np.uint8)
    textures = [fx.WALL, fx.SKY, fx.TREE, fx.GRASS, fx.EARTH, fx.SAND, 7]  # 7 = road
    widths = [30, 25, 20, 15, 12, 10, 8]
    x = 0
    for cls, w in zip(textures, widths):
        label[:, x : x + w] = cls
        x += w
    regions = regions_of(label, vocab, replace(rcfg, max_regions=5))
    assert [r.classes[0] for r in regions] == textures[:5]
    regions6 = regions_of(label, vocab, replace(rcfg, max_regions=6))
    assert len(regions6) == 6


def test_too_few_regions_gives_none(vocab, rcfg):
    label = np.full((50, 50), fx.PERSON, np.uint8)
    label[:, :40] = fx.WALL
    assert regions_of(label, vocab, rcfg) == []
