"""The training scan: a bad record is skipped with its reason, whatever is wrong with its paths; the system failing
is not a bad record."""

from __future__ import annotations

import errno
import logging
from dataclasses import replace

import pytest

from detecture.data.metadata import load_metadata
from detecture.training.dataset import check_sample
from train_fixture import write_mosaics


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_mosaics(tmp_path_factory.mktemp("data"), n=1, size=32)
    return root, load_metadata(root)[0]


def test_a_path_name_too_long_is_a_bad_record(dataset, caplog):
    """The system says "File name too long" about a name the metadata gave: the record's fault, not the machine's."""
    root, good = dataset
    record = replace(good, id="long", image_path="images/" + "a" * 300 + ".jpg")
    with caplog.at_level(logging.WARNING):
        assert check_sample(root, record, max_regions=6) == "unreadable or unsafe file"
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("skipping long: ") and line.endswith("a.jpg: File name too long")
    assert check_sample(root, good, max_regions=6) is None


def test_a_failing_system_is_not_a_bad_record(dataset, monkeypatch):
    from detecture.training import dataset as training_dataset

    root, good = dataset

    def failing(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(root / good.image_path))

    monkeypatch.setattr(training_dataset, "load_sample", failing)
    with pytest.raises(OSError, match="Input/output error"):
        check_sample(root, good, max_regions=6)
