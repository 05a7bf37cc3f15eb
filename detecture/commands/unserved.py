"""Options that serve one mode of a command only (segment's method, convert's layout, mine's describer, bench's
methods): given for another mode they are refused before any work starts, rather than silently ignored."""

from __future__ import annotations

import argparse
from typing import Collection, Mapping

from ..errors import NotServed


def refuse_unserved(args: argparse.Namespace, served_by: Mapping[str, str], kind: str,
                    chosen: str | Collection[str]) -> None:
    """Raise :class:`~detecture.errors.NotServed` for the options of ``served_by`` (an argument's dest -> the
    ``kind`` of mode it serves) given while ``chosen`` (the run's mode, or its modes where it has several, as
    bench's methods) does not include their mode; those of the first such mode are named, by their option string
    (``batch_size`` -> ``--batch-size``). An option counts as given unless it holds argparse's "not given": ``None``,
    or ``False`` for a flag (an explicit ``0`` is given)."""
    modes = [chosen] if isinstance(chosen, str) else list(chosen)
    unserved = {dest: mode for dest, mode in served_by.items()
                if mode not in modes and getattr(args, dest) is not None and getattr(args, dest) is not False}
    if unserved:
        owner = next(iter(unserved.values()))
        options = [f"--{dest.replace('_', '-')}" for dest, mode in unserved.items() if mode == owner]
        raise NotServed(options, kind, owner, modes)
