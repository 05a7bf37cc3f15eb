"""What a user reads: every command's --help, and no noise from backends a run does not use."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detecture.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


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
def test_help_examples_have_no_stray_spaces(name, parser):
    """A continued example line keeps its break (a lone backslash in a Python string would swallow it and leave a
    run of spaces inside the command)."""
    for line in (parser.epilog or "").splitlines():
        assert not re.search(r"\S {2,}-", line), line


def test_unquantized_training_does_not_import_bitsandbytes():
    script = textwrap.dedent("""
        import sys
        from detecture.backbones.qwen import QwenVL
        from detecture.training.config import LoraConfig
        from detecture.training.trainable import apply_lora
        apply_lora(QwenVL.tiny(), LoraConfig(), quantized=False, gradient_checkpointing=False)
        assert "peft" in sys.modules and "bitsandbytes" not in sys.modules, "bitsandbytes imported"
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
