"""The ``detecture`` console command: one sub-command per workflow (segment, train, mine, bench).

Each sub-command lives in ``detecture/commands/<name>.py`` and exposes ``add_parser(subparsers)``; heavy libraries are
imported inside the command, so ``detecture --help`` stays fast. A :class:`DetectureError` becomes one clear
``error:`` line and exit status 2 instead of a traceback; the statuses are defined in
:mod:`detecture.commands.exit_status`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .commands.exit_status import INTERRUPTED, USAGE_ERROR
from .errors import DetectureError

COMMANDS = ("segment", "train", "mine", "bench", "convert", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detecture",
        description="VLM-guided multi-texture segmentation (Qwen3-VL + Bridge + SAM3).",
        epilog="Run 'detecture <command> --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"detecture {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DetectureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
