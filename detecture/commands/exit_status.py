"""The exit statuses every ``detecture`` command uses (docs/conventions.md lists them for users).

* 0: everything asked for was done.
* 1: the command ran to the end but some items it was asked for failed (``segment`` images, ``bench`` samples):
  their results are missing, each failure was reported, and the last line of output gives the count. ``bench``
  also counts there the samples that have no record at all (missing: lost by a process of a launched run, say),
  which a re-run scores.
* 2: nothing was done: a usage or input error found before work started, such as an output folder that cannot be
  created or a port in use (one ``error:`` line; argparse uses 2 too).
* 3: stopped unfinished (:class:`~detecture.errors.RunStopped`): by the system, such as a full disk or an output
  path that became unwritable or vanished (one ``error:`` line naming the path and the cause), or by a cause met
  once work had begun that no single item is to blame for (``train``'s NaN guard, ``bench`` failing to load a
  method's model after it scored another's samples). Whatever was finished is kept and nothing half-written is left;
  the same command run again after the cause is fixed completes the run (``train`` with ``--resume``). Also ``mine``
  without ``--shard`` that mined its scenes but could not write the merged dataset because scenes are still being
  mined by other live runs into its ``--out`` that will not merge (``--shard`` runs; the line names them): unfinished
  in the same way, and the same command run once they finish completes it. Where every such run merges, the merge is
  left to it and the status is 0.
* 130: interrupted (Ctrl-C).
* 141: standard output closed by its reader (``detecture ... | head``), silently, as the shell's own tools do; work
  finished before is kept, and a re-run completes the rest.
* 143: stopped by SIGTERM (a job scheduler's time limit, ``docker stop``, a service manager or ``kill``: 128 + the
  signal's number, as shells report it), after the same clean-up as Ctrl-C; as with Ctrl-C, a re-run completes it.

Samples a command filters out of a dataset are data, not failures: ``mine``'s rejected scenes and samples (low
score, corrupt image, invalid description, listed in ``rejected.jsonl``) and the samples ``train``'s up-front scan
skips (missing or mis-sized files, too many regions; each logged, the count printed) leave the exit status 0, since
every output the command promises is complete.
"""

from __future__ import annotations

OK = 0
PARTIAL_FAILURE = 1
USAGE_ERROR = 2
SYSTEM_ERROR = 3
INTERRUPTED = 130
TERMINATED = 128 + 15  # SIGTERM's status in a shell
OUTPUT_CLOSED = 128 + 13  # SIGPIPE's status in a shell


def for_failures(failed: int) -> int:
    """The status of a run that finished with ``failed`` failed items."""
    return PARTIAL_FAILURE if failed else OK
