"""Describers: template phrases, description validation, Qwen reply parsing and the overlay legend."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detecture.miner.config import load_config, packaged_file
from detecture.miner.describers import (
    QwenDescriber,
    build_describer,
    build_prompt,
    parse_reply,
    validate_description,
)
from detecture.miner.overlay import LEGEND_ROW, SWATCH, draw_overlay
from detecture.utils.image_ops import NAMED_REGION_COLOURS, label_boundaries
from detecture.miner.regions import extract_regions, region_map
from detecture.miner.scoring import label_stats
from detecture.miner.vocabulary import load_vocabulary

import miner_fixture as fx


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def scene():
    vocab = load_vocabulary(packaged_file("ade20k_classes.yaml"))
    image, label = fx.scenes()["ADE_train_clean3"]
    regions = extract_regions(label_stats(label, 151), vocab, load_config().regions)
    return Image.fromarray(image), region_map(label, regions, 151), regions


def test_validate_description():
    ok = "Texture of red brick, rough rectangular blocks with grey mortar, along the left side"
    assert validate_description(ok, 10, 15) is None
    no_prefix = "A texture of brick, rough blocks with mortar lines, on the left side"
    assert "start" in validate_description(no_prefix, 10, 15)
    assert "words" in validate_description("Texture of brick, rough, left", 10, 15)
    assert "words" in validate_description(ok + " of the picture and more words here", 10, 15)
    no_commas = "Texture of red brick with rough rectangular blocks along the left side"
    assert "commas" in validate_description(no_commas, 10, 15)
    assert "lines" in validate_description(ok + "\n" + ok, 10, 15)
    assert validate_description("", 10, 15) == "empty description"


def test_template_descriptions_are_valid_and_placed(scene, cfg):
    image, rmap, regions = scene
    texts = build_describer("template", cfg.describer).describe(image, rmap, regions)
    assert len(texts) == len(regions)
    for text, region in zip(texts, regions):
        assert validate_description(text, cfg.describer.min_words, cfg.describer.max_words) is None, text
        assert text.startswith(f"Texture of {region.name},")
    by_name = dict(zip([r.name for r in regions], texts))
    assert "left" in by_name["wall"] and "right" in by_name["sand"]  # wall band on the left, sand on the right
    assert "green" in by_name["grass"]


def test_parse_reply():
    reply = (
        "Sure! Here you go:\nREGION_2: Texture of sand, pale fine grains with ripples, right side <|seg|>\n"
        "region 1: \"Texture of brick, red blocks with grey mortar lines, on the left\"\nREGION_7: ignored\n"
    )
    assert parse_reply(reply, 3) == [
        "Texture of brick, red blocks with grey mortar lines, on the left",
        "Texture of sand, pale fine grains with ripples, right side",
        "",
    ]


@pytest.mark.parametrize("layout", ["**REGION_{k}**: {text}", "**REGION_{k}:** {text}", "- REGION_{k}: {text}",
                                    "* REGION_{k}: {text}", "\u2022 REGION_{k}: {text}", "- **REGION_{k}**: {text}",
                                    "`REGION_{k}`: {text}", "REGION_{k}: **{text}**"])
def test_parse_reply_reads_markdown_lists_and_emphasis(layout):
    """Chat models often answer as a markdown list or in bold; the label is still the region's, and the
    description comes without the markup."""
    texts = ["Texture of brick, red blocks with grey mortar lines, on the left",
             "Texture of grass, green blades in dense tufts, lower half"]
    reply = "\n".join(layout.format(k=k, text=text) for k, text in enumerate(texts, start=1))
    assert parse_reply(reply, 2) == texts


def test_overlay_legend_matches_drawn_colours(scene):
    image, rmap, regions = scene
    sheet = np.asarray(draw_overlay(image, rmap, [r.name for r in regions]))
    h = rmap.shape[0]
    outline = label_boundaries(rmap)
    for k in range(1, len(regions) + 1):
        colour = NAMED_REGION_COLOURS[k - 1][1]
        row = sheet[h + (k - 1) * LEGEND_ROW : h + k * LEGEND_ROW]
        assert ((row == colour).all(axis=-1)).sum() >= SWATCH * SWATCH  # the legend's swatch is the drawn colour
        assert (sheet[:h][outline & (rmap == k)] == colour).all()


class FakeQwen:
    """Stands in for QwenVL: same ``chat`` signature, canned reply, records the calls."""

    def __init__(self, reply: str):
        self.reply, self.calls = reply, []

    def chat(self, images, user_prompt, system_prompt=None, max_new_tokens=300):
        self.calls.append((images, user_prompt, system_prompt, max_new_tokens))
        return [self.reply for _ in images]


def test_qwen_describer_prompt_and_parsing(scene, cfg):
    image, rmap, regions = scene
    lines = "\n".join(f"REGION_{k}: Texture of {r.name}, distinct surface with a regular pattern, somewhere in view"
                      for k, r in enumerate(regions, start=1))
    fake = FakeQwen(lines)
    texts = QwenDescriber(cfg.describer, model=fake).describe(image, rmap, regions)
    assert all(validate_description(t, 10, 15) is None for t in texts)
    [(images, prompt, system, max_tokens)] = fake.calls
    assert len(images) == 1 and images[0].width > image.width  # photo beside the overlay
    assert max_tokens == cfg.describer.max_new_tokens and system
    for k, region in enumerate(regions, start=1):
        assert f"REGION_{k}: outlined in {NAMED_REGION_COLOURS[k - 1][0]}, dataset label '{region.name}'" in prompt
    assert prompt == build_prompt(regions, cfg.describer.min_words, cfg.describer.max_words)
