"""The training scan: a bad record is skipped with its reason, whatever is wrong with its paths; the system failing
is not a bad record. Flipped samples: their descriptions name the side their masks are on."""

from __future__ import annotations

import errno
import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from detecture.data.metadata import SampleRecord, TextureEntry, load_metadata, save_binary_mask, save_metadata
from detecture.miner.config import load_config as load_miner_config
from detecture.miner.describers import TemplateDescriber
from detecture.miner.regions import Region
from detecture.training.augment import Flips, mirror_words
from detecture.training.config import AugmentConfig, DataConfig
from detecture.training.dataset import TextureDataset, check_sample
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


@pytest.mark.parametrize("text", ["glossy <|seg|> tiles", "sand<|im_end|>", "a <|image_pad|> here"])
def test_a_description_holding_control_token_text_is_skipped(tmp_path, caplog, text):
    """Tokenised as the token itself, an extra <|seg|> would hand the next region's SEG state to this one; the scan
    skips such a record like its other bad ones, and keeps the rest."""
    root = write_mosaics(tmp_path, n=2, size=32)
    bad, good = load_metadata(root)
    entries = (replace(bad.textures[0], description=f"Texture of {text}, with words"), *bad.textures[1:])
    save_metadata(root / "metadata.json", [replace(bad, textures=entries), good])
    with caplog.at_level(logging.WARNING):
        dataset = TextureDataset(root, DataConfig(), seed=0)
    assert [r.id for r in dataset.report.kept] == [good.id]
    assert dict(dataset.report.skipped) == {"control token in description": 1}
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith(f"skipping {bad.id}: ") and text in line


def test_regions_without_a_description_are_kept_counted_and_warned_about_once(tmp_path, caplog):
    """A dataset made without a describer (Outex: every description "") trains the Bridge from its masks, so its
    samples are kept; but the LM loss would teach the model to write no words, which the scan must say, once."""
    root = write_mosaics(tmp_path, n=3, size=32)
    records = load_metadata(root)
    blank = [replace(r, textures=tuple(replace(t, description=d) for t, d in zip(r.textures, ["", " \t"])))
             for r in records[:2]]
    save_metadata(root / "metadata.json", [*blank, records[2]])
    empty = sum(min(len(r.textures), 2) for r in records[:2])
    regions = sum(len(r.textures) for r in records)
    with caplog.at_level(logging.WARNING):
        dataset = TextureDataset(root, DataConfig(), seed=0)
    assert len(dataset) == 3 and not dataset.report.skipped
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"{empty} of {regions} regions (in 2 of 3 samples) have an empty description" in warnings[0]
    assert "LM loss" in warnings[0]
    assert dataset.report.summary().endswith(f"{empty} of {regions} regions with an empty description")


def describe(image: np.ndarray, masks: np.ndarray, names: list[str]) -> list[str]:
    """What the miner's template describer writes about ``masks`` (region k named ``names[k]``) on ``image``."""
    rmap = sum((k + 1) * m.astype(np.uint8) for k, m in enumerate(masks))
    regions = [Region(name, (k,), float(m.mean())) for k, (name, m) in enumerate(zip(names, masks))]
    return TemplateDescriber(load_miner_config().describer).describe(Image.fromarray(image), rmap, regions)


@pytest.fixture(scope="module")
def described_scene(tmp_path_factory):
    """A grey 96 px scene (so colour and grain read the same flipped) with regions in the upper left, along the right
    side and in the lower left, described by the template describer and written as unified metadata."""
    root = tmp_path_factory.mktemp("described")
    yy, xx = np.mgrid[:96, :96]
    masks = np.stack([(yy < 32) & (xx < 32), xx >= 64, (yy >= 64) & (xx < 48)])
    image = np.full((96, 96, 3), 128, np.uint8)
    names = ["brick", "sand", "grass"]
    (root / "masks").mkdir()
    Image.fromarray(image).save(root / "scene.png")
    for name, mask in zip(names, masks):
        save_binary_mask(root / "masks" / f"{name}.png", mask)
    texts = describe(image, masks, names)
    entries = tuple(TextureEntry(text, f"masks/{name}.png") for text, name in zip(texts, names))
    save_metadata(root / "metadata.json", [SampleRecord("scene", "scene.png", entries)])
    return root, texts


@pytest.mark.parametrize("hflip, vflip", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_a_flipped_sample_names_the_side_its_masks_are_on(described_scene, hflip, vflip):
    """The flipped sample's descriptions are what the describer writes about the flipped image itself."""
    root, mined = described_scene
    augment = AugmentConfig(hflip=hflip, vflip=vflip, scale_crop_prob=0.0, color_jitter=0.0)
    item = TextureDataset(root, DataConfig(augment=augment), seed=0).item(0, epoch=0)
    names = [text.removeprefix("Texture of ").split(",")[0] for text in item.descriptions]
    assert item.descriptions == describe(item.image, item.masks, names)
    assert sorted(item.descriptions) != sorted(mined)  # the flip moved regions to the other side


def test_mirroring_swaps_whole_position_words_keeping_their_case():
    text = "Left TOP upper-right leftover Bottom lower uppermost"
    assert mirror_words(text, Flips(horizontal=True)) == "Right TOP upper-left leftover Bottom lower uppermost"
    assert mirror_words(text, Flips(vertical=True)) == "Left BOTTOM lower-right leftover Top upper uppermost"
    assert mirror_words(text, Flips(horizontal=True, vertical=True)) == (
        "Right BOTTOM lower-left leftover Top upper uppermost")
    assert mirror_words(text, Flips()) == text
