"""Run by ``accelerate launch`` in test_launch.py: several ``detecture`` commands in one launched process group.

argv[1] is a JSON list of steps ``[name, argv, fault]``. Each item a command finishes is logged as
``ITEM <rank> <name> <id>`` to ``<argv[2]>.<rank>`` (a file per rank: lines on a shared pipe could interleave); ``fault`` ``[kind, n]`` hits rank 1 at its n-th item: ``kill`` (SIGKILL itself, as a
crashed node would) or ``full`` (a disk-full ``OSError``, which stops that rank's command unfinished).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys

from detecture.benchmark import runner
from detecture.cli import main
from detecture import output as segment_output
from detecture.miner import orchestrate as miner_run

RANK = int(os.environ.get("RANK", "0"))
LOG = open(f"{sys.argv[2]}.{RANK}", "a", buffering=1)


def hook(name: str, fault, ident) -> callable:
    count = [0]

    def before(*args):
        count[0] += 1
        if fault and RANK == 1 and count[0] == fault[1]:
            if fault[0] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, "No space left on device", "injected")
        LOG.write(f"ITEM {RANK} {name} {ident(*args)}\n")

    return before


def wrapped(real, name: str, fault, ident):
    before = hook(name, fault, ident)

    def call(*args, **kwargs):
        before(*args)
        return real(*args, **kwargs)

    return call


if __name__ == "__main__":
    targets = {"segment": (segment_output, "write_outputs", lambda stem, path, *rest: path.name),
               "mine": (miner_run, "write_state", lambda path, state: state["scene"]),
               "bench": (runner, "run_sample", lambda cell, record, *rest: record.id)}
    for name, argv, fault in json.loads(sys.argv[1]):
        module, attribute, ident = targets[argv[0]]
        real = getattr(module, attribute)
        setattr(module, attribute, wrapped(real, name, fault, ident))
        try:
            LOG.write(f"EXIT {RANK} {name} {main(argv)}\n")
        finally:
            setattr(module, attribute, real)
