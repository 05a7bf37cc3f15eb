"""``detecture bench``: placeholder until the bench sub-system lands."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="(not yet available)")
    p.set_defaults(func=lambda args: 1)
