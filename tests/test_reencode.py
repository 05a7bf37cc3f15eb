"""Decoupled re-encode: block-diagonal over texture lines, and the KV-cached suffix pass equals a full re-encode."""

import numpy as np
import torch

from detecture.prompts import format_response
from detecture.reencode import decoupled_attention_mask, line_ids, seg_states, suffix_hidden_states


def test_line_ids_hand_built():
    seg = 9
    ids = torch.tensor([[1, 2, seg, 3, 4, seg, 5]])
    assert line_ids(ids, seg).tolist() == [[0, 0, 0, 1, 1, 1, 2]]


def test_mask_blocks_other_lines_and_padding():
    prefix = torch.tensor([[0, 1, 1]])
    suffix = torch.tensor([[1, 1, 1, 1, 0]])
    lines = torch.tensor([[0, 0, 1, 1, 1]])
    allowed = decoupled_attention_mask(prefix, suffix, lines, torch.float32)[0, 0] == 0
    expected = torch.tensor([
        # prefix  | suffix
        [0, 1, 1, 1, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 1, 0, 0],
        [0, 1, 1, 0, 0, 1, 1, 0],
        [0, 1, 1, 0, 0, 0, 0, 0],  # padded row: prefix only
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def _inputs(qwen, image, descriptions):
    return qwen.build_inputs([image], ["Find the textures."], [format_response(descriptions)])


def test_line_two_cannot_see_line_one(tiny_pipeline, texture_photos):
    """Perturbing line 1's words leaves line 2's SEG state unchanged (and changes it without decoupling)."""
    qwen = tiny_pipeline.qwen
    image = texture_photos["brick"]
    a = _inputs(qwen, image, ["Texture of brick, coarse grid, left", "Texture of grass, fine, right"])
    b = _inputs(qwen, image, ["Texture of smooth water, bright glossy waves", "Texture of grass, fine, right"])
    for decoupled in (True, False):
        sa = seg_states(qwen, a, suffix_hidden_states(qwen, a, decoupled=decoupled))[0]
        sb = seg_states(qwen, b, suffix_hidden_states(qwen, b, decoupled=decoupled))[0]
        assert sa.shape == sb.shape == (2, qwen.hidden_size)
        assert not torch.allclose(sa[0], sb[0])
        if decoupled:
            torch.testing.assert_close(sa[1], sb[1], rtol=1e-5, atol=1e-5)
        else:
            assert not torch.allclose(sa[1], sb[1], atol=1e-4)


def test_cached_suffix_equals_full_reencode_batched(tiny_pipeline, texture_photos):
    """Two images of different content and responses of different lengths (left-padded prefix, padded suffix)."""
    qwen = tiny_pipeline.qwen
    images = [texture_photos["gravel"], np.ascontiguousarray(texture_photos["grass"][:300])]
    responses = [format_response(["Texture of gravel, grey stones", "Texture of sand, fine grains, bottom"]),
                 format_response(["Texture of grass blades"])]
    inputs = qwen.build_inputs(images, ["Find the textures.", "Find every texture region here please."], responses)
    cached = suffix_hidden_states(qwen, inputs, use_cache=True)
    full = suffix_hidden_states(qwen, inputs, use_cache=False)
    states_cached, states_full = seg_states(qwen, inputs, cached), seg_states(qwen, inputs, full)
    assert [s.shape[0] for s in states_cached] == [2, 1]
    for c, f in zip(states_cached, states_full):
        torch.testing.assert_close(c, f, rtol=1e-4, atol=1e-4)


def test_padding_side_does_not_change_seg_states(tiny_pipeline, texture_photos):
    """A short prompt alone, and the same prompt left-padded next to a long one, give the same SEG states."""
    qwen = tiny_pipeline.qwen
    image = texture_photos["brick"]
    response = format_response(["Texture of brick"])
    alone = qwen.build_inputs([image], ["Short."], [response])
    padded = qwen.build_inputs([image, image], ["Short.", "A much longer prompt with many more words."],
                               [response, response])
    s_alone = seg_states(qwen, alone, suffix_hidden_states(qwen, alone))[0]
    s_padded = seg_states(qwen, padded, suffix_hidden_states(qwen, padded))[0]
    torch.testing.assert_close(s_alone, s_padded, rtol=1e-4, atol=1e-4)


def test_line_local_positions_restart_per_line():
    from detecture.reencode import line_local_positions

    positions = (torch.arange(5) + 40).expand(3, 1, 5)
    lines = torch.tensor([[0, 0, 0, 1, 1]])
    assert line_local_positions(positions, lines)[0, 0].tolist() == [40, 41, 42, 40, 41]
