"""The inference contract a head carries: round trips, prompt rendering, legacy behaviour, and each term's effect."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detecture.backbones.qwen import QwenVL, fit_image
from detecture.backbones.sam3 import Sam3Backbone
from detecture.bridge.contract import ImagePolicy, InferenceContract, legacy_contract, published_contract
from detecture.bridge.head import CONFIG_FILE, DetectureHead, HeadConfig
from detecture.errors import CheckpointError, InputError
from detecture.pipeline import DetecturePipeline, fallback_response
from detecture.prompt_sets import prompt_set
from detecture.prompts import Regime, format_response, user_prompt

DATA = Path(__file__).parent / "data"
LINES = ["Texture of red brick wall, regular blocks", "Texture of green grass, fine blades",
         "Texture of grey gravel, coarse stones"]


@pytest.fixture(scope="module")
def backbones():
    return QwenVL.tiny(0), Sam3Backbone.tiny(0)


def _pipeline(backbones, contract: InferenceContract | None) -> DetecturePipeline:
    """A fresh pipeline on fresh tiny backbones (a contract changes the Qwen it is applied to)."""
    qwen, sam = QwenVL.tiny(0), backbones[1]
    torch.manual_seed(0)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, contract=contract))
    return DetecturePipeline(qwen, sam, head)


CONTRACTS = {
    "default": InferenceContract(),
    "global": InferenceContract(positions="global"),
    "published": published_contract(embedding_shrink=0.97),
    "square": InferenceContract(qwen_image=ImagePolicy(mode="square", size=320)),
    "no-budget": InferenceContract(qwen_image=ImagePolicy(max_pixels=None)),
    "uncapped": InferenceContract(oracle_k="none", fallback="texture_lines", logit_scale=0.5),
}


@pytest.mark.parametrize("name", CONTRACTS)
def test_contract_round_trips_through_a_saved_head(backbones, tmp_path, name):
    qwen, sam = backbones
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, contract=CONTRACTS[name]))
    head.save_pretrained(tmp_path / "head")
    loaded = DetectureHead.from_pretrained(tmp_path / "head")
    assert loaded.config.contract == CONTRACTS[name]
    stored = json.loads((tmp_path / "head" / CONFIG_FILE).read_text())["contract"]
    assert stored["prompts"]["system"] == CONTRACTS[name].prompts.system  # full texts: the head is self-contained


def test_published_prompt_set_renders_the_published_templates_byte_for_byte():
    published = json.loads((DATA / "published_prompts.json").read_text())
    prompts = prompt_set("published-neurips2026")
    template, phrases = published["user_template"], published["count_phrases"]
    assert prompts.system == published["system"]
    assert user_prompt(Regime.autonomous(), prompts) == template.replace("{N}", phrases["autonomous"])
    assert user_prompt(Regime.oracle(2), prompts) == template.replace("{N}", phrases["oracle_2"])
    assert user_prompt(Regime.oracle(1), prompts) == template.replace("{N}", phrases["oracle_1"])
    with pytest.raises(InputError, match="no query regime"):
        user_prompt(Regime.query("rough bark"), prompts)


def test_default_prompt_set_renders_the_prompts_older_heads_were_trained_with():
    legacy = json.loads((DATA / "detecture_prompts_legacy.json").read_text())
    regimes = [Regime.autonomous(), Regime.query("rough bark")] + [Regime.oracle(k) for k in range(1, 7)]
    assert [prompt_set("detecture").system] + [user_prompt(r) for r in regimes] == legacy


def test_head_without_a_contract_behaves_as_before(backbones, tmp_path):
    """An old config.json (no "contract" key): legacy prompts, no pixel budget, 1/sqrt(d) logits, line-local."""
    qwen, sam = backbones
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam, contract=None))
    head.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    del config["contract"]
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(config))
    old = DetectureHead.from_pretrained(tmp_path / "old")
    assert old.config.contract is None and old.config.effective_contract == legacy_contract()
    assert old.mask_head.scale == pytest.approx(1 / math.sqrt(old.config.mask_hidden_size))
    pipe = DetecturePipeline.tiny(head=tmp_path / "old")
    legacy = json.loads((DATA / "detecture_prompts_legacy.json").read_text())
    big = np.random.default_rng(0).integers(0, 255, (1100, 1000, 3), dtype=np.uint8)
    inputs = pipe.qwen.build_inputs([big], [user_prompt(Regime.autonomous(), pipe.qwen.prompts)],
                                    system=pipe.qwen.prompts.system)
    reference = QwenVL.tiny(0).image_processor(images=[big], return_tensors="pt")  # untouched image, hub limits
    assert torch.equal(inputs["pixel_values"], reference["pixel_values"])
    text = pipe.qwen.tokenizer.decode(inputs["input_ids"][0])
    assert legacy[0] in text and legacy[1] in text


def test_image_policies():
    image = np.zeros((3000, 4000, 3), np.uint8)
    native = fit_image(image, ImagePolicy(max_pixels=1008 * 1008))
    assert native.shape[0] * native.shape[1] <= 1008 * 1008
    assert abs(native.shape[1] / native.shape[0] - 4 / 3) < 0.01
    assert fit_image(image, ImagePolicy(mode="square", max_pixels=None, size=1008)).shape == (1008, 1008, 3)
    small = np.zeros((40, 50, 3), np.uint8)
    assert fit_image(small, ImagePolicy()) is small
    with pytest.raises(CheckpointError):
        ImagePolicy(mode="square")


def test_shrinking_a_strip_the_shape_check_accepts_keeps_it_within_qwens_aspect_limit():
    """The up-front check passes strips up to MAX_ASPECT:1 on their own size; shrinking one to the pixel budget must
    not stretch it past that (truncating both sides did, and Qwen's processor raised after the models loaded)."""
    from detecture.images import MAX_ASPECT, check_aspect

    policy = ImagePolicy(max_pixels=1008 * 1008)
    for short in range(2, 400):
        for long in range(MAX_ASPECT * short - 3, MAX_ASPECT * short + 1):
            for height, width in ((short, long), (long, short)):
                check_aspect("strip", width, height)
                size = policy.target_size(height, width)
                if size is not None:
                    assert max(size) <= MAX_ASPECT * min(size) and size[0] * size[1] <= policy.max_pixels


def test_bad_contract_in_config_is_one_clear_error(backbones, tmp_path):
    qwen, sam = backbones
    DetectureHead(HeadConfig.for_backbones(qwen, sam)).save_pretrained(tmp_path / "h")
    config = json.loads((tmp_path / "h" / CONFIG_FILE).read_text())
    config["contract"]["positions"] = "sideways"
    (tmp_path / "h" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="positions"):
        DetectureHead.from_pretrained(tmp_path / "h")


@pytest.mark.parametrize("key, value, named, bad", [
    ("embedding_shrink", "0.97", "embedding_shrink", "0.97"),  # JSON has real numbers: a quoted one is wrongly typed
    ("sam3_vit_eps", "1e-5", "sam3_vit_eps", "1e-5"),
    ("qwen_image", {"mode": "native", "max_pixels": "1000"}, "qwen_image.max_pixels", "1000"),
    ("qwen_image", {"mode": "square", "size": 10.5}, "qwen_image.size", 10.5),
    ("logit_scale", "abc", "logit_scale", "abc"),
    ("logit_scale", -3.0, "logit_scale", -3.0),  # would flip every mask
    ("logit_scale", 0, "logit_scale", 0),
    ("vocab_limit", True, "vocab_limit", True),  # JSON true is no count of ids
    ("embedding_shrink", float("nan"), "embedding_shrink", float("nan")),
])
def test_a_wrongly_typed_contract_value_is_one_error_naming_file_and_key(backbones, tmp_path, key, value, named, bad):
    """Checked by read_head_config, before any model loads; they were raw TypeErrors or silently accepted."""
    from detecture.bridge.head import read_head_config

    qwen, sam = backbones
    DetectureHead(HeadConfig.for_backbones(qwen, sam)).save_pretrained(tmp_path / "h")
    config_file = tmp_path / "h" / CONFIG_FILE
    config = json.loads(config_file.read_text())
    config["contract"][key] = value
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        read_head_config(tmp_path / "h")
    message = str(info.value)
    assert message.startswith(f"{config_file}: contract {named} ") and message.endswith(f"got {bad!r}")


def test_position_mode_decides_whether_a_line_sees_earlier_line_lengths(backbones, texture_photos):
    image = texture_photos["brick"][:64, :64]
    short = format_response(["Texture of brick", LINES[1]])
    long = format_response([LINES[0] + " with many more words in it", LINES[1]])
    for mode, same in (("line_local", True), ("global", False)):
        pipe = _pipeline(backbones, InferenceContract(positions=mode))
        a = pipe.seg_states([image], Regime.oracle(2), [short])[0][1]
        b = pipe.seg_states([image], Regime.oracle(2), [long])[0][1]
        assert torch.allclose(a, b, atol=1e-5) == same, mode


def test_oracle_k_policy(backbones, texture_photos):
    image = texture_photos["grass"][:64, :64]
    three = [format_response(LINES)]
    capped = _pipeline(backbones, InferenceContract()).segment([image], Regime.oracle(2), forced_responses=three)
    uncapped = _pipeline(backbones, InferenceContract(oracle_k="none")).segment([image], Regime.oracle(2),
                                                                              forced_responses=three)
    assert capped[0].num_regions == 2 and uncapped[0].num_regions == 3
    assert uncapped[0].meta["contract"]["oracle_k"] == "none"


def test_a_pipeline_runs_a_training_head_without_dropout_and_leaves_it_training(backbones, texture_photos):
    """Live validation builds a pipeline on the head a run trains (a new head is in training mode, Bridge dropout
    0.4): building it and segmenting leave the head training, while segmenting runs it in eval mode (runs agree)."""
    pipe = _pipeline(backbones, InferenceContract())
    assert pipe.head.training
    image, forced = texture_photos["brick"][:64, :64], [format_response(LINES[:2])]
    first, second = (pipe.segment([image], Regime.oracle(2), forced_responses=forced)[0] for _ in range(2))
    assert all(module.training for module in pipe.head.modules())
    np.testing.assert_array_equal(first.region_logits, second.region_logits)


def test_fallback_grounds_texture_lines_only_for_images_without_seg(backbones, texture_photos):
    pipe = _pipeline(backbones, InferenceContract(fallback="texture_lines"))
    images = [texture_photos["brick"][:64, :64], texture_photos["gravel"][:64, :64]]
    with_seg = format_response(LINES[:2])
    without = "TEXTURE_1: " + LINES[0] + "\nTEXTURE_2: " + LINES[2] + "\nTEXTURE_3: too short"
    repaired = fallback_response(without, truncated=False)
    assert repaired == format_response([LINES[0], LINES[2]])
    cut = "TEXTURE_1: " + LINES[0] + "\nTEXTURE_2: " + LINES[2]
    assert fallback_response(cut, truncated=True) == format_response([LINES[0]])  # a cut-off last line is dropped
    assert fallback_response(with_seg, truncated=False) is None
    regime = Regime.autonomous()
    states = pipe.seg_states(images, regime, [with_seg, with_seg])
    kept = states[0].clone()
    states[1] = states[1][:0]  # image 1 emitted no <|seg|>
    grounded = pipe._fallback_states(images, [with_seg, without], [False, False], states, regime)
    assert grounded == [with_seg, repaired]
    assert torch.equal(states[0], kept)  # an image with <|seg|> lines is never switched to the fallback
    alone = pipe.seg_states([images[1]], regime, [repaired])[0]
    assert torch.allclose(states[1], alone, atol=1e-5)


def test_embedding_shrink_scales_every_row_but_seg():
    qwen = QwenVL.tiny(0)
    embed = qwen.model.get_input_embeddings().weight.clone()
    head = qwen.model.get_output_embeddings().weight.clone()
    qwen.apply_contract(InferenceContract(embedding_shrink=0.5))
    qwen.apply_contract(InferenceContract(embedding_shrink=0.5))  # idempotent
    seg = qwen.seg_token_id
    others = torch.arange(embed.shape[0]) != seg
    assert torch.allclose(qwen.model.get_input_embeddings().weight[others], 0.5 * embed[others])
    assert torch.allclose(qwen.model.get_output_embeddings().weight[others], 0.5 * head[others])
    assert torch.equal(qwen.model.get_input_embeddings().weight[seg], embed[seg])


def test_segment_prints_the_contract_and_writes_it_to_json(backbones, tmp_path, capsys):
    from PIL import Image

    from detecture.cli import main

    qwen, sam = backbones
    DetectureHead(HeadConfig.for_backbones(qwen, sam, contract=published_contract())).save_pretrained(tmp_path / "h")
    image = tmp_path / "brick.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(image)
    args = ["segment", str(image), "--tiny", "--head", str(tmp_path / "h"), "--k", "2", "--out", str(tmp_path / "o")]
    assert main(args + ["--show-contract"]) == 0
    printed = capsys.readouterr().out
    assert "published-neurips2026" in printed and "global positions" in printed and "square 1008x1008" in printed
    record = json.loads((tmp_path / "o" / "brick.detecture.json").read_text())
    assert InferenceContract.from_dict(record["contract"], "json") == published_contract()
