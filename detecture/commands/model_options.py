"""The options that name the backbones: ``--qwen`` (Qwen3-VL), ``--sam3`` (SAM3) and ``--quantization`` (Qwen's).

One name, metavar and wording on every command that takes them, so a command line moves from one command to another
as written; a command adds only what the model is for there and which one it uses when none is named.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ..backbones import DEFAULT_QWEN, DEFAULT_SAM3
from .two_values import refuse_two_values

# The Qwen a command that runs a head loads when --qwen is not given (bridge/head.default_qwen decides it).
QWEN_OF_HEAD = f"default: the one --head was trained on, else {DEFAULT_QWEN}"
SAM3_DEFAULT = f"default: {DEFAULT_SAM3}"
# The model each option names, by its bench --model key, as a refusal of two values for it words it.
MODEL_NAMES = {"qwen": "the Qwen3-VL model", "sam3": "the SAM3 model"}


def add_qwen(parser: argparse.ArgumentParser, note: str = QWEN_OF_HEAD, aliases: Sequence[str] = ()) -> None:
    """``--qwen QWEN`` into ``args.qwen``, its help ending in ``note`` (the model's use there, its default).
    ``aliases`` are a command's older spellings: still accepted, but kept out of --help and the usage line, which
    show the one name. Each has its own place (``--base`` into ``args.base``), so that a refusal names the spelling
    typed; :func:`fold_qwen` then moves it into ``args.qwen``."""
    parser.add_argument("--qwen", metavar="QWEN", help=f"Qwen3-VL hub id or local folder ({note})")
    for alias in aliases:
        parser.add_argument(alias, metavar="QWEN", help=argparse.SUPPRESS)


def fold_qwen(args: argparse.Namespace, aliases: Sequence[str]) -> None:
    """Move the model an alias of ``--qwen`` names into ``args.qwen``; two spellings that name different models are
    refused (:func:`~detecture.commands.two_values.refuse_two_values`)."""
    for alias in aliases:
        value = getattr(args, alias.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if args.qwen is not None:
            refuse_two_values(MODEL_NAMES["qwen"], (f"--qwen {args.qwen}", args.qwen), (f"{alias} {value}", value))
        args.qwen = value


def add_sam3(parser: argparse.ArgumentParser, note: str = SAM3_DEFAULT) -> None:
    """``--sam3 SAM3`` into ``args.sam3``, its help ending in ``note``."""
    parser.add_argument("--sam3", metavar="SAM3", help=f"SAM3 hub id or local folder ({note}; the hub's SAM3 is "
                                                       "gated: needs a token)")


def add_quantization(parser: argparse.ArgumentParser) -> None:
    """``--quantization 4bit|8bit`` into ``args.quantization``."""
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="load Qwen quantized (bitsandbytes, GPU)")
