"""One help formatter for the sub-commands: defaults are shown once, and only when they say something."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` unless the help already states its default (e.g. "default: cuda if available", which
    is more useful than argparse's "None") or there is nothing to show (``None``, an off flag). Epilogs keep their
    line breaks, so example commands can be laid out as they are typed."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "default" in help_text or action.default in (None, False, argparse.SUPPRESS):
            return help_text
        return super()._get_help_string(action)
