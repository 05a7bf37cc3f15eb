"""The exit statuses every ``detecture`` command uses (the README's "Exit status" table says the same).

* 0: everything asked for was done.
* 1: the command ran to the end but some items failed (images, benchmark samples, unreadable training samples);
  their results are missing, each failure was reported, and the last line of output gives the count.
* 2: nothing was done: a usage or input error found before work started (one ``error:`` line; argparse uses 2 too).
* 130: interrupted (Ctrl-C).

What a command exists to filter out is data, not failure: ``mine``'s rejected scenes and samples (low score,
corrupt image, invalid description) are listed in ``rejected.jsonl`` and the run exits 0.
"""

from __future__ import annotations

OK = 0
PARTIAL_FAILURE = 1
USAGE_ERROR = 2
INTERRUPTED = 130


def for_failures(failed: int) -> int:
    """The status of a run that finished with ``failed`` failed items."""
    return PARTIAL_FAILURE if failed else OK
