"""The parser class of every sub-command: it reports the arguments it does not know itself.

argparse hands a sub-command's unknown arguments back to the top-level parser, which reports them under
``usage: detecture [-h] [--version] [-v] <command> ...``; that usage lists none of the options the user was
reaching for. Here the sub-command's parser reports them, under its own usage, with the option nearest to a
mistyped one (``--methods`` -> ``--method``).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Sequence


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that refuses unknown arguments itself (exit status 2, as argparse does)."""

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{self.suggestion(extras)}")
        return parsed, extras

    def suggestion(self, extras: list[str]) -> str:
        """`` (did you mean --x?)`` for the first unknown option that is close to one of this parser's options, else
        nothing (a stray positional value has no near option)."""
        known = [option for action in self._actions for option in action.option_strings if option.startswith("--")]
        for extra in extras:
            if not extra.startswith("--"):
                continue
            close = difflib.get_close_matches(extra.partition("=")[0], known, n=1)
            if close:
                return f" (did you mean {close[0]}?)"
        return ""
