"""``ClassicalParams``: the classical segmenter's settings as one validated object, threaded to worker processes."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from detecture.classical import ClassicalParams, segment_texture
from detecture.commands.segment_classical import ClassicalJob, run_classical
from detecture.demo.examples import mosaic_two
from detecture.errors import InputError
from detecture.prompts import Regime


@pytest.fixture(scope="module")
def disc():
    return mosaic_two(128)[0]


def test_defaults_are_the_segmenters_defaults(disc):
    from skimage import data

    photo = data.astronaut()[::8, ::8]
    for image, k in ((disc, 2), (photo, 3)):
        np.testing.assert_array_equal(segment_texture(image, k, params=None),
                                      segment_texture(image, k, params=ClassicalParams()))


def test_a_changed_field_changes_the_result(disc):
    """Autonomous K on a two-texture mosaic: allowed two regions it finds them, capped at one it cannot."""
    assert segment_texture(disc, None, params=ClassicalParams(max_k=2)).shape[0] == 2
    assert segment_texture(disc, None, params=ClassicalParams(max_k=1)).shape[0] == 1


@pytest.mark.parametrize("field, value", [
    ("work_side", 0), ("pad", 0), ("frequencies", ()), ("frequencies", (0.1, 0.7)), ("bandwidth", -0.2),
    ("max_k", 2.5), ("cut_temperature", float("nan")), ("min_silhouette", 1.5), ("band", -1), ("luma_stat_weight", "x"),
])
def test_invalid_values_are_refused_naming_the_field(field, value):
    with pytest.raises(InputError, match=rf"ClassicalParams\.{field}="):
        ClassicalParams(**{field: value})


def test_params_are_frozen_and_list_frequencies_become_a_tuple():
    params = ClassicalParams(frequencies=[0.1, 0.2])
    assert params.frequencies == (0.1, 0.2) and hash(params) == hash(ClassicalParams(frequencies=(0.1, 0.2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.max_k = 3


def test_a_job_carries_its_params_to_the_worker(disc, tmp_path):
    path = tmp_path / "disc.png"
    Image.fromarray(disc).save(path)
    (tmp_path / "out").mkdir()
    job = ClassicalJob(0, path, tmp_path / "out" / "disc.detecture", Regime.autonomous(), {},
                       params=ClassicalParams(max_k=1))
    assert pickle.loads(pickle.dumps(job)) == job
    [(index, row, error)] = list(run_classical([job], 1))
    assert (index, error) == (0, None) and len(row["regions"]) == 1
    assert len(json.loads((tmp_path / "out" / "disc.detecture.json").read_text())["regions"]) == 1
