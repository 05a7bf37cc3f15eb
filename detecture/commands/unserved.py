"""Options that serve one mode of a command only (segment's method, convert's layout, mine's describer, bench's
methods, the real backbones rather than ``--tiny``'s): given for another mode they are refused before any work
starts, rather than silently ignored."""

from __future__ import annotations

import argparse
from typing import Collection, Iterable, Mapping, Sequence

from ..errors import IgnoredByTiny, NotServed


def is_given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the option of ``dest`` was given: it holds something other than argparse's "not given", ``None``, or
    ``False`` for a flag (an explicit ``0`` is given)."""
    value = getattr(args, dest)
    return value is not None and value is not False


def option_name(dest: str) -> str:
    """The option string of an argument's dest, as the user typed it (``batch_size`` -> ``--batch-size``)."""
    return f"--{dest.replace('_', '-')}"


def refuse_unserved(args: argparse.Namespace, served_by: Mapping[str, str | Sequence[str]], kind: str,
                    chosen: str | Collection[str]) -> None:
    """Raise :class:`~detecture.errors.NotServed` for the options of ``served_by`` (an argument's dest -> the
    ``kind`` of mode it serves, or the modes where several read it, as bench's ``--prompt``) given
    (:func:`is_given`) while ``chosen`` (the run's mode, or its modes where it has several, as bench's methods)
    includes none of their modes; those of the first such mode (or modes) are named, by their option string."""
    modes = [chosen] if isinstance(chosen, str) else list(chosen)
    owners = {dest: (served,) if isinstance(served, str) else tuple(served) for dest, served in served_by.items()}
    unserved = {dest: owner for dest, owner in owners.items()
                if not any(mode in modes for mode in owner) and is_given(args, dest)}
    if unserved:
        owner = next(iter(unserved.values()))
        options = [option_name(dest) for dest, served in unserved.items() if served == owner]
        raise NotServed(options, kind, owner, modes)


def given_options(args: argparse.Namespace, dests: Iterable[str]) -> list[str]:
    """The option strings of those of ``dests`` given in ``args``; a dest the command has no option for is skipped
    (a table of the service's fields names some that a command does not offer)."""
    return [option_name(dest) for dest in dests if hasattr(args, dest) and is_given(args, dest)]


def refuse_with_tiny(options: Sequence[str], tiny: str = "--tiny") -> None:
    """Raise :class:`~detecture.errors.IgnoredByTiny` when ``options`` (as typed) is not empty: every command that
    has ``--tiny`` calls it, before any model loads, with the options its own tiny backbones would leave unread, since
    an ignored ``--qwen`` or ``--device`` lets the user believe it took effect. ``tiny`` names what asked for the tiny
    backbones where it was not ``--tiny`` (train's ``model.tiny`` of a config file)."""
    if options:
        raise IgnoredByTiny(options, tiny)
