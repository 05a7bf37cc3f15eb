import re

import pytest

from detecture.errors import InputError
from detecture.prompts import SEG_TOKEN, Regime, format_response, parse_response, user_prompt


def test_format_then_parse_round_trips():
    descriptions = ["Texture of red brick, coarse mortar grid, left half", "Texture of grass, fine blades, right"]
    text = format_response(descriptions)
    assert text.splitlines()[0] == f"TEXTURE_1: {descriptions[0]} {SEG_TOKEN}"
    assert parse_response(text) == descriptions


def test_parse_ignores_lines_without_seg_and_keeps_order():
    text = f"Sure!\nTEXTURE_1: a {SEG_TOKEN}\nnoise line\nTEXTURE_2: b {SEG_TOKEN}\n"
    assert parse_response(text) == ["a", "b"]


@pytest.mark.parametrize("k", [0, 7, -1, 2.5, True])
def test_k_outside_range_is_rejected(k):
    with pytest.raises(InputError, match="1 to 6"):
        Regime.oracle(k)


def test_regime_from_a_users_k():
    assert Regime.from_k("auto").kind == Regime.from_k(None).kind == "autonomous"
    assert Regime.from_k("3") == Regime.from_k(3) == Regime.oracle(3)


@pytest.mark.parametrize("k", ["many", "2.0", 2.0, True, 0, "7"])
def test_a_users_k_is_refused_by_the_name_it_was_given_by(k):
    """The API's field is ``k`` and the command line's option ``--k``: each refusal names the one the user typed."""
    with pytest.raises(InputError, match=r"^k must be 'auto' or an integer from 1 to 6, got "):
        Regime.from_k(k)
    with pytest.raises(InputError, match=r"^--k must be 'auto' or an integer from 1 to 6, got "):
        Regime.from_k(k, "--k")


def test_empty_query_is_rejected():
    with pytest.raises(InputError, match="empty"):
        Regime.query("   ")


def test_prompts_state_the_count_regime():
    assert "between 1 and 6" in user_prompt(Regime.autonomous())
    assert "exactly 4" in user_prompt(Regime.oracle(4))
    assert '"the rough bark"' in user_prompt(Regime.query("the  rough bark"))


def test_text_grounding_accepts_lines_without_seg():
    text = f"TEXTURE_1: rough bark\nTEXTURE_2: smooth water {SEG_TOKEN}\nA remark."
    assert parse_response(text) == ["smooth water"]
    assert parse_response(text, require_seg=False) == ["rough bark", "smooth water"]


@pytest.mark.parametrize("text, per_token, words", [
    # a doubled token: its own (empty) entry, so the next words stay with the next token
    (f"TEXTURE_1: Texture of red brick {SEG_TOKEN}{SEG_TOKEN}\nTEXTURE_2: Texture of green grass {SEG_TOKEN}",
     ["Texture of red brick", "", "Texture of green grass"], ["Texture of red brick", "Texture of green grass"]),
    # two entries on one line are two
    (f"TEXTURE_1: Texture of red brick {SEG_TOKEN} TEXTURE_2: Texture of green grass {SEG_TOKEN}",
     ["Texture of red brick", "Texture of green grass"], ["Texture of red brick", "Texture of green grass"]),
    # a description wrapped onto a second line stays whole
    (f"TEXTURE_1: red\nbrick wall {SEG_TOKEN}\nTEXTURE_2: green grass {SEG_TOKEN}",
     ["red brick wall", "green grass"], ["red brick wall", "green grass"]),
])
def test_each_seg_token_gets_the_entry_before_it(text, per_token, words):
    """The Bridge grounds one state per ``<|seg|>``: the descriptions must pair with the tokens one to one, in
    order, however the lines are laid out; text grounding takes the entries that have words."""
    assert parse_response(text) == per_token and len(per_token) == text.count(SEG_TOKEN)
    assert parse_response(text, require_seg=False) == words


@pytest.mark.parametrize("query, token", [("the <|image_pad|> bark", "<|image_pad|>"),
                                          ("find <|seg|> it", "<|seg|>"), ("bark<|im_end|>", "<|im_end|>")])
def test_a_query_holding_control_token_text_is_refused(query, token):
    """Such text is tokenised as the control token itself: an extra image placeholder crashed Qwen, an extra
    <|seg|> or <|im_end|> rewrote the conversation."""
    with pytest.raises(InputError, match=re.escape(token)):
        Regime.query(query)


def test_a_query_may_use_angle_brackets_and_bars_otherwise():
    assert Regime.query("bark | moss <3 (a <b> c)").text == "bark | moss <3 (a <b> c)"
