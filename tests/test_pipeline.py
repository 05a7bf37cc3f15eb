"""End-to-end inference with tiny backbones of the real classes on real photos."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from detecture.errors import CheckpointError, InputError
from detecture.prompts import SEG_TOKEN, Regime, format_response
from detecture.result import SegmentationResult, upsample_rows


@pytest.mark.parametrize("grounding", ["bridge", "text"])
def test_masks_partition_the_image(tiny_pipeline, texture_photos, grounding):
    from skimage import data

    images = [data.coffee(), texture_photos["gravel"]]
    responses = [format_response(["Texture of ceramic", "Texture of wood", "Texture of metal"]),
                 format_response(["Texture of gravel, grey stones", "Texture of sand"])]
    results = tiny_pipeline.segment(images, Regime.oracle(3), grounding, forced_responses=responses)
    assert [r.num_regions for r in results] == [3, 2]
    for image, result in zip(images, results):
        h, w = image.shape[:2]
        assert result.logits.shape == (result.num_regions, h, w)
        masks = result.masks
        assert masks.shape == (result.num_regions, h, w) and masks.dtype == bool
        assert masks.sum(0).max() <= 1  # disjoint
        unassigned = result.label_map == 0
        assert np.array_equal(masks.any(0), ~unassigned)  # regions + dustbin cover every pixel exactly once
        best = torch.from_numpy(result.logits).max(0)
        assert torch.equal(torch.from_numpy(result.label_map.astype(np.int64)),
                           torch.where(best.values > 0, best.indices + 1, 0))


def test_k_is_capped_by_the_regime(tiny_pipeline, texture_photos):
    response = format_response(["a", "b", "c", "d"])
    result = tiny_pipeline.segment([texture_photos["brick"]], Regime.oracle(2), "bridge", [response])[0]
    assert result.num_regions == 2 and result.descriptions == ["a", "b"]
    query = tiny_pipeline.segment([texture_photos["brick"]], Regime.query("rough"), "text", [response])[0]
    assert query.num_regions == 1


@pytest.mark.parametrize("response, expected", [
    (f"TEXTURE_1: Texture of red brick {SEG_TOKEN}{SEG_TOKEN}\nTEXTURE_2: Texture of green grass {SEG_TOKEN}",
     ["Texture of red brick", "", "Texture of green grass"]),
    (f"TEXTURE_1: Texture of red brick {SEG_TOKEN} TEXTURE_2: Texture of green grass {SEG_TOKEN}",
     ["Texture of red brick", "Texture of green grass"]),
])
def test_bridge_masks_carry_the_words_written_before_their_token(tiny_pipeline, texture_photos, response, expected):
    """A malformed reply (a doubled ``<|seg|>``, two entries on one line) must not shift descriptions onto the
    masks of other tokens: one mask per token, labelled with that token's own entry."""
    result = tiny_pipeline.segment([texture_photos["brick"]], Regime.autonomous(), "bridge", [response])[0]
    assert result.descriptions == expected and result.region_logits.shape[0] == response.count(SEG_TOKEN)


def test_generation_path_runs_without_forcing(tiny_pipeline, texture_photos):
    """A random tiny model emits no <|seg|> lines: the result is empty, not an exception."""
    results = tiny_pipeline.segment([texture_photos["brick"], texture_photos["grass"]], Regime.autonomous(), "text")
    assert len(results) == 2
    for r in results:
        assert r.label_map.shape == (512, 512) and r.num_regions == len(r.descriptions) <= 6


def test_bridge_needs_a_head(texture_photos):
    from detecture.pipeline import DetecturePipeline

    pipe = DetecturePipeline.tiny(with_head=False)
    with pytest.raises(CheckpointError, match="--head"):
        pipe.segment([texture_photos["brick"]], Regime.oracle(1), "bridge", [format_response(["a"])])


def test_bad_arguments(tiny_pipeline, texture_photos):
    with pytest.raises(InputError, match="grounding"):
        tiny_pipeline.segment([texture_photos["brick"]], Regime.oracle(1), "magic")
    with pytest.raises(InputError, match="forced responses"):
        tiny_pipeline.segment([texture_photos["brick"]], Regime.oracle(1), "text", [])


def test_huge_image_gets_full_size_masks(tiny_pipeline):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (2600, 3900, 3), dtype=np.uint8)
    result = tiny_pipeline.segment([image], Regime.oracle(2), "text", [format_response(["a", "b"])])[0]
    assert result.label_map.shape == (2600, 3900)
    assert result.region_logits.shape[-1] < 100  # kept at model resolution until asked for


def test_chunked_upsampling_equals_interpolate():
    lowres = torch.randn(3, 9, 13)
    full = F.interpolate(lowres[None], size=(50, 37), mode="bilinear", align_corners=False)[0]
    parts = np.concatenate([upsample_rows(lowres.numpy(), (50, 37), slice(r, min(r + 7, 50)))
                            for r in range(0, 50, 7)], axis=1)
    np.testing.assert_allclose(parts, full.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lowres", [(0, 4, 4), (0, 1, 1)])
def test_result_without_regions_is_all_dustbin(lowres, tmp_path):
    """No ``<|seg|>`` line is a normal outcome: every consumer of a result takes one with no regions."""
    from detecture.output import write_outputs

    result = SegmentationResult([], "", np.zeros(lowres), (10, 12))
    assert result.label_map.shape == (10, 12) and not result.label_map.any()
    assert result.masks.shape == (0, 10, 12) and result.logits.shape == (0, 10, 12)
    assert result.region_scores() == [] and result.to_hf() == []
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "in.png")
    row = write_outputs(tmp_path / "in.detecture", tmp_path / "in.png", np.zeros((10, 12, 3), np.uint8), result,
                        Regime.autonomous())
    assert row["regions"] == [] and (tmp_path / "in.detecture.png").is_file()


def test_tiny_pipeline_uses_a_given_head_checkpoint(tmp_path):
    from detecture.pipeline import DetecturePipeline

    trained = DetecturePipeline.tiny(seed=3).head
    path = trained.save_pretrained(tmp_path / "head")
    loaded = DetecturePipeline.tiny(seed=0, head=path).head
    for (name, a), (_, b) in zip(trained.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_head_for_another_sam3_width_is_refused_when_the_pipeline_is_built():
    """It was a raw torch shape error at the first image, after both models had loaded."""
    from transformers import Sam3Model

    from detecture.backbones import tiny
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig
    from detecture.pipeline import DetecturePipeline

    qwen, sam = QwenVL.tiny(), Sam3Backbone.tiny()
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam))
    config = tiny.tiny_sam3_config(len(sam.tokenizer))
    config.text_config.hidden_size = 2 * sam.text_hidden_size
    other = Sam3Backbone(Sam3Model(config).eval(), sam.tokenizer, name="other-sam3")
    with pytest.raises(CheckpointError) as info:
        DetecturePipeline(qwen, other, head)
    message = str(info.value)
    assert f"sam_text_hidden_size {sam.text_hidden_size}" in message and "other-sam3" in message
    assert str(2 * sam.text_hidden_size) in message and "--sam3" in message


def test_a_head_with_few_slots_grounds_as_many_lines_as_it_has_room_for(texture_photos):
    """``num_slots`` is a head config key (at least 2); more lines than slots was a raw ValueError."""
    from detecture.backbones.qwen import QwenVL
    from detecture.backbones.sam3 import Sam3Backbone
    from detecture.bridge import DetectureHead, HeadConfig
    from detecture.pipeline import DetecturePipeline

    qwen, sam = QwenVL.tiny(), Sam3Backbone.tiny()
    pipe = DetecturePipeline(qwen, sam, DetectureHead(HeadConfig.for_backbones(qwen, sam, num_slots=3)))
    response = format_response(["Texture of a", "Texture of b", "Texture of c"])
    result = pipe.segment([texture_photos["brick"]], Regime.autonomous(), "bridge", [response])[0]
    assert result.descriptions == ["Texture of a", "Texture of b"] and result.region_logits.shape[0] == 2


@pytest.mark.parametrize("grounding", ["bridge", "text"])
def test_an_empty_forced_response_gets_no_regions(tiny_pipeline, texture_photos, grounding):
    """An empty reply has nothing to ground; under bridge grounding its empty suffix crashed the re-encode pass."""
    image = texture_photos["brick"][:64, :64]
    result = tiny_pipeline.segment([image], Regime.autonomous(), grounding, [""])[0]
    assert result.num_regions == 0 and result.descriptions == [] and not result.label_map.any()
