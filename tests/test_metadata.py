"""The unified metadata format: schema errors, path-traversal refusal, mask/image consistency."""

import numpy as np
import pytest
from PIL import Image

from detecture.data.metadata import (
    DATASETS_ROOT_ENV,
    datasets_root,
    load_metadata,
    load_sample,
    parse_records,
    resolve_within,
    save_binary_mask,
    save_metadata,
)
from detecture.errors import DatasetError


def _dataset(tmp_path, mask_size=(16, 12)):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    mask = np.zeros(mask_size[::-1], bool)
    mask[:, : mask_size[0] // 2] = True
    save_binary_mask(tmp_path / "masks" / "a_0.png", mask)
    records = parse_records([{"id": "a", "image_path": "images/a.png", "scene": "s1",
                              "textures": [{"description": "Texture of x", "mask_path": "masks/a_0.png"}]}])
    save_metadata(tmp_path / "metadata.json", records)
    return records


def test_round_trip_keeps_extra_keys(tmp_path):
    records = _dataset(tmp_path)
    loaded = load_metadata(tmp_path)
    assert loaded == records and loaded[0].extra == {"scene": "s1"}
    sample = load_sample(tmp_path, loaded[0])
    assert sample.image.shape == (12, 16, 3) and sample.masks.shape == (1, 12, 16)
    assert sample.masks[0, :, :8].all() and not sample.masks[0, :, 8:].any()


@pytest.mark.parametrize("bad, message", [
    ({"image_path": "x", "textures": []}, "missing required key 'id'"),
    ({"id": "a", "image_path": "", "textures": []}, "image_path"),
    ({"id": "a", "image_path": "x", "textures": "no"}, "'textures' must be a list"),
    ({"id": "a", "image_path": "x", "textures": [{"description": "d"}]}, "mask_path"),
])
def test_schema_errors_name_the_record(bad, message):
    with pytest.raises(DatasetError, match=message):
        parse_records([bad], source="meta.json")


def test_not_a_list_and_invalid_json(tmp_path):
    with pytest.raises(DatasetError, match="JSON list"):
        parse_records({"id": 1})
    (tmp_path / "metadata.json").write_text("{oops")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_metadata(tmp_path)


@pytest.mark.parametrize("path", ["../secret.png", "masks/../../secret.png", "/etc/passwd", "~/x.png"])
def test_paths_cannot_escape_the_root(tmp_path, path):
    with pytest.raises(DatasetError, match="escapes|absolute"):
        resolve_within(tmp_path, path)


def test_symlink_escape_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(DatasetError, match="escapes"):
        resolve_within(root, "link/file.png")


def test_mask_size_mismatch_names_the_file(tmp_path):
    records = _dataset(tmp_path, mask_size=(10, 12))
    with pytest.raises(DatasetError, match="a_0.png.*10x12.*16x12"):
        load_sample(tmp_path, records[0])


def test_datasets_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv(DATASETS_ROOT_ENV, str(tmp_path))
    assert datasets_root("elsewhere") == tmp_path


def test_symlink_loop_is_one_error_naming_the_record_and_path(tmp_path):
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "l1").symlink_to("l2")
    (tmp_path / "masks" / "l2").symlink_to("l1")
    with pytest.raises(DatasetError, match=r"metadata.json: record 'a': path 'masks/l1' is a symlink loop"):
        resolve_within(tmp_path, "masks/l1", source="metadata.json: record 'a'")


def test_deeply_nested_json_is_one_error(tmp_path):
    (tmp_path / "metadata.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match=r"metadata.json: malformed metadata file \(JSON nested too deeply\)"):
        load_metadata(tmp_path)


def test_a_nul_character_or_a_huge_integer_is_one_error_naming_the_file(tmp_path):
    """Python's own errors for these (``embedded null byte`` while resolving, the 4300-digit limit while parsing)
    are not JSON or path errors, so they used to escape as tracebacks."""
    with pytest.raises(DatasetError, match=r"record 'a': path 'images/x\\x00.png' holds a NUL character"):
        resolve_within(tmp_path, "images/x\x00.png", source="record 'a'")
    (tmp_path / "metadata.json").write_text('[{"id": ' + "9" * 5000 + ', "image_path": "a.png", "textures": []}]')
    with pytest.raises(DatasetError, match=r"metadata.json: malformed metadata file \(not valid JSON: .*digits"):
        load_metadata(tmp_path)
