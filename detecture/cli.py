"""The ``detecture`` console command: one sub-command per workflow (segment, train, mine, bench,
convert, demo).

Each sub-command lives in ``detecture/commands/<name>.py`` and exposes ``add_parser(subparsers)``; heavy libraries are
imported inside the command, so ``detecture --help`` stays fast. A :class:`DetectureError` becomes one clear
``error:`` line and exit status 2 instead of a traceback, and an ``OSError`` escaping any command (disk full,
unwritable output) one line naming the path and the cause with status 3, as is a run stopped unfinished once its work
had begun (:class:`~detecture.errors.RunStopped`); SIGTERM unwinds like Ctrl+C (:func:`sigterm_as_interrupt`) and is
reported as such whatever error its unwinding met (status 143); the statuses are defined in
:mod:`detecture.commands.exit_status`.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import gc
import importlib
import logging
import os
import select
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from . import __version__
from .commands.command_parser import CommandParser
from .commands.exit_status import INTERRUPTED, OUTPUT_CLOSED, SYSTEM_ERROR, TERMINATED, USAGE_ERROR
from .errors import DetectureError, RunStopped

COMMANDS = ("segment", "train", "mine", "bench", "convert", "demo")

log = logging.getLogger(__name__)

# Loggers whose warnings concern nothing Detecture does; shown with -vv.
_QUIET_LOGGERS = (
    "bitsandbytes.backends.cpu.ops",  # optional CPU kernels for 4-bit matmuls; Detecture quantizes on GPUs only
)

_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler's time limit, ``docker stop``, ``kill``), raised where Ctrl+C would be: a
    ``KeyboardInterrupt``, so every clean-up written for Ctrl+C (claims released, worker pools stopped, temporary
    folders removed) runs for it too, instead of the process dying where it stands."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[threading.Event]:
    """Inside the block, SIGTERM raises :class:`Terminated` in the main thread; the previous handler is restored
    after. The block gets an event that is set once SIGTERM arrived: the unwinding it starts may meet other errors,
    which then are its consequences (:func:`main`), as are the errors finalizers meet from then on. Only in this
    process: a child forked meanwhile (a data loader's
    worker) that inherits the handler dies of SIGTERM as before, since that is how its parent stops it (pool workers
    start from a fresh forkserver and never inherit it). Outside the main thread, where no handler can be set,
    nothing changes."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    owner = os.getpid()

    def raise_terminated(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.set()
        sys.unraisablehook = _unraisable_after_sigterm
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _unraisable_after_sigterm(unraisable: "sys.UnraisableHookArgs") -> None:
    """An error a finalizer meets once SIGTERM stopped the run (a data loader's iterator, collected as the process
    ends, finding its workers killed by the same signal) is a consequence of the stop: logged for -vv, not printed
    after the one line "terminated"."""
    log.debug("ignored while stopping on SIGTERM: %s %r", unraisable.err_msg or "exception in", unraisable.object,
              exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detecture",
        description="VLM-guided multi-texture segmentation (Qwen3-VL + Bridge + SAM3).",
        epilog="Run 'detecture <command> --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"detecture {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True,
                                parser_class=CommandParser)  # unknown options reported under the command's usage
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    for command in sub.choices.values():  # -v means the same after the command name as before it
        command.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                             help="more log output (-vv for debug)")
    return parser


def _skip_the_exit_collection() -> None:
    """Freeze the garbage collector as the interpreter exits: its closing passes over every object still alive, which
    torch + transformers number in millions, cost a command seconds of CPU after its work was done. Objects are still
    freed by reference counting and every atexit handler runs (temporary folders, worker pools, logging); only
    reference cycles left at exit are not collected, which Python never promised to do."""
    global _exit_collection_skipped
    if not _exit_collection_skipped:
        atexit.register(gc.freeze)
        _exit_collection_skipped = True


_exit_collection_skipped = False


def main(argv: list[str] | None = None) -> int:
    _skip_the_exit_collection()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        try:
            with sigterm_as_interrupt() as terminated:
                return int(args.func(args) or 0)
        except (Exception, KeyboardInterrupt):
            # A SIGTERM sent to the whole process group also kills the workers (a data loader's, say), whose own
            # errors may replace Terminated while the run unwinds: the run was still stopped by SIGTERM.
            if not terminated.is_set():
                raise
            log.debug("stopped by SIGTERM; while unwinding:", exc_info=True)
            raise Terminated from None
    except RunStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return SYSTEM_ERROR
    except DetectureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            # Python's documented recipe: point stdout at devnull so the exit's own flush does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return OUTPUT_CLOSED
        log.debug("stopped by a system error", exc_info=True)
        print(f"error: {describe_system_error(exc)}", file=sys.stderr)
        return SYSTEM_ERROR
    except Terminated:
        print("terminated", file=sys.stderr)
        return TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


def stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (``| head`` exited): then a ``BrokenPipeError`` is
    that, not a worker's pipe breaking, which is a system fault like any other."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no usable stdout
        return False


def describe_system_error(exc: OSError) -> str:
    """One line for an environment fault: the path, the system's words for the cause, and what to do."""
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    cause = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno)
    if hint and hint.lower() != cause.lower():
        cause = f"{cause} ({hint})"
    return (f"{where + ': ' if where else ''}{cause}; the run stopped unfinished, keeping what was complete; fix this "
            "and run the same command again to finish it (train: add --resume)")


if __name__ == "__main__":
    sys.exit(main())
