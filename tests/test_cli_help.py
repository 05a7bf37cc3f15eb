"""What a user reads: every command's --help (that a train run imports no bitsandbytes, whose import logs a warning
on some CPUs, is checked on a real run in tests/test_train_loop.py)."""

from __future__ import annotations

import re

import pytest

from detecture.cli import build_parser


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    return action.choices.items()


@pytest.mark.parametrize(("name", "parser"), list(_subparsers()))
def test_help_states_each_default_once(name, parser):
    text = parser.format_help()
    assert "(default: None)" not in text
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help:
            shown = formatter._expand_help(action)
            assert len(re.findall(r"\bdefault\b", shown)) <= 1, shown


@pytest.mark.parametrize(("name", "parser"), list(_subparsers()))
def test_every_command_shows_examples_that_parse(name, parser):
    """Each command's --help has examples, and each complete one (no "..." standing for the options above) is
    accepted by its parser as written."""
    import shlex

    lines = (parser.epilog or "").splitlines()
    assert "examples:" in lines
    commands, pending = [], None
    for line in lines:
        text = line.split("  (")[0].strip()  # an aside in parentheses follows two spaces
        if pending is not None:
            pending += " " + text
        elif text.startswith(("detecture ", "accelerate ")):
            pending = text
        if pending is not None and not pending.endswith("\\"):
            commands.append(pending)
            pending = None
        elif pending is not None:
            pending = pending[:-1]
    ours = [argv for argv in (shlex.split(c) for c in commands) if name in argv]
    assert ours, f"no example of 'detecture {name}'"
    for argv in (a for a in ours if "..." not in a):
        parser.parse_args(argv[argv.index(name) + 1:])


@pytest.mark.parametrize(("name", "parser"), list(_subparsers()))
def test_help_examples_have_no_stray_spaces(name, parser):
    """A continued example line keeps its break (a lone backslash in a Python string would swallow it and leave a
    run of spaces inside the command)."""
    for line in (parser.epilog or "").splitlines():
        assert not re.search(r"\S {2,}-", line), line



@pytest.mark.parametrize("key", ["qwen", "sam3"])
def test_bench_model_options_name_the_methods_that_read_them(key):
    """--qwen and --sam3 say which methods they serve: every method that reads the model (benchmark.methods'
    MODEL_KEYS, which the run checks --model keys against), and no other."""
    from detecture.benchmark.methods import MODEL_KEYS

    bench = dict(_subparsers())["bench"]
    text = next(a.help for a in bench._actions if f"--{key}" in a.option_strings)
    named = re.search(r"\(of the (.+?) methods?;", text).group(1).replace(" and ", ", ").split(", ")
    assert sorted(named) == sorted(name for name, keys in MODEL_KEYS.items() if key in keys)
