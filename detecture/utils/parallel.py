"""One home for batch work: worker pools, the failure policy for one item, and shares of a launched run.

Failure policy (every batch command, ``segment``, ``mine`` and ``bench``, follows it):

* a **data error** — a :class:`~detecture.errors.DetectureError` (unreadable or corrupt image, bad label map, invalid
  description...) — is a per-item result: the item is reported or recorded as failed and the run goes on;
* an **environment error** — :class:`OSError` (disk full, permission, I/O), :class:`MemoryError` or torch's
  out-of-memory, an interrupt — stops the run unfinished with one line naming the path and the cause (:func:`stopped`):
  nothing is recorded for the item, so a re-run, once the cause is gone, finishes it. So do the DetectureErrors
  that are the run's, not the item's (:data:`RUN_ERRORS`: a run already stopped, a model that cannot load);
* anything else is a **programming error** and propagates with its traceback.

Worker processes start from a forkserver (spawn where there is none): the parent may already hold torch / OpenMP
thread pools, which a plain fork would copy half-initialised. They run one BLAS / OpenMP thread each (parallelism is
across items; threads spinning against each other on a shared CPU made k-means ~10x slower), never see the
terminal's Ctrl+C (the parent handles it and stops them), and exit when the parent dies, even by ``kill -9``. A
worker that dies itself (the out-of-memory killer, ``kill -9``) takes its items with it: the parent notices and stops
the run as an environment error (:class:`WorkerLost`) instead of waiting for them forever. The parent talks to each
worker over its own pipe, with no helper thread, and kills them at once when the run stops: no wait of the parent's
on its workers is unbounded, even when a SIGTERM sent to the process group killed them and the forkserver too.

Under ``accelerate launch`` (or ``torchrun``), and with ``--shard I/N`` for job arrays without a launcher, each
process takes a disjoint, deterministic share of the items (:func:`share`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

from ..errors import DetectureError, InputError, ModelAccessError, RunStopped

T = TypeVar("T")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DATA_ERRORS: tuple[type[BaseException], ...] = (DetectureError,)
# DetectureErrors that no item is to blame for: recorded as an item's failure, they would mark every later item bad
# for good (a re-run skips recorded items), so they stop the run instead.
RUN_ERRORS: tuple[type[BaseException], ...] = (RunStopped, ModelAccessError)
PARENT_POLL_SECONDS = 0.5
WORKER_EXIT_WAIT_SECONDS = 5.0  # the longest the parent waits for a worker to leave before it goes on without it


class WorkerLost(ChildProcessError):
    """A worker process died while the run still needed it (killed by the system or a user): an environment error,
    so the run stops unfinished and a re-run does the items it lost."""

    def __init__(self, exitcode: int) -> None:
        if exitcode < 0:
            try:
                how = f"was killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-exitcode}"
            if -exitcode == signal.SIGKILL:
                how += " (the out-of-memory killer, or kill -9)"
        else:
            how = f"exited unexpectedly (status {exitcode})"
        super().__init__(f"a worker process {how}")


class WorkerTraceback(Exception):
    """Where in the worker an exception raised in the parent happened: its traceback there, as text."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0]) if self.args else ""


def is_environment_error(exc: BaseException) -> bool:
    """Disk, I/O, permission (``OSError``) or memory (``MemoryError``, torch's out-of-memory); interrupts are the
    CLI's to report."""
    torch = sys.modules.get("torch")
    return isinstance(exc, (OSError, MemoryError)) or (torch is not None and isinstance(exc, torch.OutOfMemoryError))


def stopped(exc: BaseException, what: str = "the run") -> RunStopped:
    """The one-line error for an environment error: the path, the cause, and that a re-run finishes the work."""
    if isinstance(exc, OSError):
        cause = exc.strerror or str(exc) or type(exc).__name__
        where = f"{exc.filename}: " if exc.filename else ""
    else:
        cause, where = "not enough memory", ""
        if str(exc):
            cause += f" ({str(exc).splitlines()[0]})"
    return RunStopped(f"{where}{cause}; {what} stopped unfinished (re-run the same command to finish it)")


@contextmanager
def stop_unfinished(what: str) -> Iterator[None]:
    """Inside the block, an environment error becomes :func:`stopped`'s one-line :class:`RunStopped` for ``what``
    (``mine``, ``bench``...); data and programming errors pass through unchanged."""
    try:
        yield
    except Exception as exc:
        if not is_environment_error(exc):
            raise
        raise stopped(exc, what) from None


def item_outcome(fn: Callable[..., T], *args: Any) -> tuple[T | None, str | None]:
    """``(fn(*args), None)``, or ``(None, message)`` for a data error; other errors propagate (module docstring)."""
    try:
        return fn(*args), None
    except RUN_ERRORS:
        raise
    except DATA_ERRORS as exc:
        return None, str(exc)


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which schedulers such as Slurm restrict)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes per launched process: this machine's CPUs shared by the processes launched on it."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cpu_count() // max(1, local))


def limit_thread_variables() -> None:
    """One BLAS / OpenMP thread for runtimes loaded after this call (they read the variables once, at load)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"


def single_threaded() -> None:
    """One thread for every BLAS / OpenMP pool already loaded, and for torch if it is (never imported for this)."""
    from threadpoolctl import threadpool_limits

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    threadpool_limits(limits=1)


@contextmanager
def one_thread() -> Iterator[None]:
    """One BLAS / OpenMP thread inside the block, for one item's numerics: the float32 reductions then sum in one
    order (a notebook, the demo and N workers give the same result), and k-means' threads no longer spin against
    other work (~10x slower on a shared CPU in the classical benchmark). Parallelism belongs across items."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _die_with_parent(parent_pid: int) -> None:
    """Exit when ``parent_pid`` is gone: ``PR_SET_PDEATHSIG`` covers the direct parent on Linux, and a watch thread
    covers the command's process when a forkserver stands between them (and other platforms)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            threading.Event().wait(PARENT_POLL_SECONDS)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    limit_thread_variables()
    single_threaded()
    if initializer is not None:
        initializer(*initargs)


def _context(preload: Sequence[str]):
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(preload))
        return context
    return multiprocessing.get_context("spawn")


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl+C back while processes start, and raise it once they are all up (so the pool can stop them).

    The mask blocks SIGINT in this thread, and the forkserver and workers inherit it, so a terminal's Ctrl+C (sent to
    the whole process group) never interrupts them half-started. Other threads of this process (tqdm's monitor, say)
    do not share the mask and may take the signal: in the main thread a recording handler defers it too, since the
    workers' start would otherwise be interrupted half done and leave the started ones to nobody.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    from multiprocessing import resource_tracker

    # Started inside the block, the resource tracker would unblock SIGINT when it is up (it restores an unblocked
    # mask, not the previous one), and a Ctrl+C would then reach the forkserver while it imports its preload.
    resource_tracker.ensure_running()
    received: list[int] = []
    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum)) if in_main else None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending Ctrl+C is taken by the recording handler now
        if in_main:
            signal.signal(signal.SIGINT, handler)
    if received:
        raise KeyboardInterrupt


def unordered_map(fn: Callable[[Any], T], items: Sequence[Any], workers: int, *,
                  initializer: Callable[..., None] | None = None, initargs: tuple = (),
                  preload: Sequence[str] = (), chunk: int | None = None) -> Iterator[T]:
    """``fn`` over ``items`` in ``workers`` processes (in this process for one), yielding results as they finish.

    ``fn`` and ``initializer`` must be importable module-level functions; ``preload`` names modules the forkserver
    imports once for all workers. A worker is handed ``chunk`` items at a time and sends their results back together
    (by default up to 16, fewer for short lists: one round trip per item would cost more than a short item); a
    caller that records each result as it finishes asks for 1, since a stopped run loses the results a worker holds
    back for the rest of its chunk. Any exception — a worker's environment or programming error (its initializer's
    too), a worker that died (:class:`WorkerLost`), or Ctrl+C / SIGTERM in the parent — kills the workers at once and
    propagates; data errors are ``fn``'s to turn into results.

    The pool is this function's own: one pipe per worker, and no thread in the parent. ``multiprocessing.Pool``
    restarts dead workers from a thread and stops through threads and a lock shared with the workers, so a SIGTERM
    sent to the whole process group (Slurm's scancel, a systemd stop), which kills the workers and the forkserver as
    it stops the parent, left ``Pool.terminate()`` waiting forever on a thread that had died restarting them.
    """
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        yield from map(fn, items)
        return
    size = chunk or max(1, min(16, len(items) // (workers * 8)))
    pending = deque((fn, items[i:i + size]) for i in range(0, len(items), size))
    context = _context(preload)
    links: dict[multiprocessing.connection.Connection, multiprocessing.process.BaseProcess] = {}
    before = set(multiprocessing.active_children())
    finished = False
    try:
        with _sigint_held():  # a Ctrl+C held back here is raised as the block ends, when every worker is known
            for _ in range(workers):
                ours, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs, os.getpid(), initializer, initargs),
                                          daemon=True)
                process.start()
                theirs.close()
                links[ours] = process
        busy: set[multiprocessing.connection.Connection] = set()
        for link in links:
            if pending:
                _send(link, links[link], pending.popleft())
                busy.add(link)
        sentinels = {process.sentinel: link for link, process in links.items()}
        while busy:
            ready = multiprocessing.connection.wait([*busy, *sentinels])
            for link in [r for r in ready if r in busy]:  # answers first: a worker may die right after its last
                try:
                    ok, value, trace = link.recv()
                except (EOFError, OSError):  # died while answering
                    raise WorkerLost(_exit_code(links[link])) from None
                busy.discard(link)
                if not ok:
                    raise value from WorkerTraceback(trace)
                if pending:
                    _send(link, links[link], pending.popleft())
                    busy.add(link)
                yield from value
            for sentinel in [r for r in ready if r in sentinels]:
                link = sentinels.pop(sentinel)
                if link in busy:  # its job would never be answered; an idle worker's death costs nothing
                    raise WorkerLost(_exit_code(links[link]))
        finished = True
    finally:
        _stop([*links.values(), *(p for p in multiprocessing.active_children() if p not in before)],
              list(links), finished)


def _send(link: multiprocessing.connection.Connection, process: multiprocessing.process.BaseProcess,
          job: tuple[Callable[[Any], T], Sequence[Any]]) -> None:
    """Hand ``job`` to an idle worker; one that has died meanwhile is a lost worker, not a broken pipe of ours."""
    try:
        link.send(job)
    except OSError:
        raise WorkerLost(_exit_code(process)) from None


def _exit_code(process: multiprocessing.process.BaseProcess) -> int:
    """The exit status of a worker that has died (or is dying): what its forkserver reports, 255 where it cannot."""
    process.join(WORKER_EXIT_WAIT_SECONDS)
    return 255 if process.exitcode is None else process.exitcode


def _stop(processes: list[multiprocessing.process.BaseProcess], links: list[multiprocessing.connection.Connection],
          finished: bool) -> None:
    """End the workers. After a complete run they are idle and leave when their pipes close; otherwise they are
    killed at once (their items are abandoned, and SIGKILL needs no cooperation from a worker that may be stuck).
    Every wait is bounded: a dead forkserver or a worker that does not leave can never hold the parent back."""
    for link in links:
        link.close()
    if finished:
        for process in processes:
            process.join(WORKER_EXIT_WAIT_SECONDS)
    for process in processes:
        if process.exitcode is None:
            process.kill()
    for process in processes:
        process.join(WORKER_EXIT_WAIT_SECONDS)


def _serve(link: multiprocessing.connection.Connection, parent_pid: int, initializer: Callable[..., None] | None,
           initargs: tuple) -> None:
    """A worker: answer each job from the parent with ``(True, results, "")`` or ``(False, exception, traceback)``
    (:func:`_failed`) until the parent closes the pipe. An initializer that failed answers every job with its exception, so the parent stops with the
    real cause rather than a worker that died."""
    failure: tuple[bool, Any, str] | None = None
    try:
        _start_worker(parent_pid, initializer, initargs)
    except Exception as exc:
        failure = _failed(exc)
    while True:
        try:
            job = link.recv()
        except (EOFError, OSError):
            return
        if failure is not None:
            answer: tuple[bool, Any, str] = failure
        else:
            try:
                answer = (True, _run_chunk(job), "")
            except Exception as exc:
                answer = _failed(exc)
        try:
            link.send(answer)
        except OSError:
            return
        except Exception as exc:  # results that cannot be pickled
            link.send(_failed(exc))


def _run_chunk(job: tuple[Callable[[Any], T], Sequence[Any]]) -> list[T]:
    """A worker's task: ``fn`` over a chunk of items."""
    fn, chunk = job
    return [fn(item) for item in chunk]


def _failed(exc: Exception) -> tuple[bool, Exception, str]:
    """A worker's answer for ``exc``: the exception, if it survives the trip to the parent (one whose class cannot
    be rebuilt from its pickle, an ``__init__`` with other arguments, travels as a RuntimeError with its text), and
    its traceback as text, which the parent shows as the exception's cause."""
    trace = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return False, exc, trace


@dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count`` (0-based), from ``--shard I/N`` (1-based on the command line, like job arrays'
    task ids are usually written), combined with the processes of a launched run."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        if text is None:
            return cls()
        try:
            i, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"--shard {text}: expected I/N with whole numbers, e.g. 1/4") from None
        if n < 1 or not 1 <= i <= n:
            raise InputError(f"--shard {text}: I must be in 1..N")
        return cls(i - 1, n)

    @property
    def whole(self) -> bool:
        return self.count == 1

    def label(self) -> str:
        return f"{self.index + 1}/{self.count}"


class Ranks:
    """The processes of this run: one, or those ``accelerate launch`` / ``torchrun`` started (``WORLD_SIZE`` > 1),
    joined through ``accelerate``'s :class:`~accelerate.PartialState` (gloo on CPU, NCCL on GPUs).

    ``PartialState()`` alone, in a launch without GPUs, reports a single process in every process (each would then
    do all the work); asking for CPU explicitly where there is no GPU makes it join the others over gloo.
    """

    def __init__(self) -> None:
        self._state = None
        self.index, self.count, self.device = 0, 1, None
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            import torch
            from accelerate import PartialState

            # long shares end at one barrier: the default 30-minute collective timeout would cut them off
            self._state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(days=7))
            self.index, self.count, self.device = self._state.process_index, self._state.num_processes, None
            if self._state.device.type != "cpu":
                self.device = str(self._state.device)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def wait(self) -> None:
        """Barrier: return once every process got here."""
        if self._state is not None:
            self._state.wait_for_everyone()

    def shard(self, shard: Shard) -> Shard:
        """The share of this process: shard ``shard`` of a job array, split again among the launched processes."""
        return Shard(shard.index * self.count + self.index, shard.count * self.count)


def share(items: Sequence[T], shard: Shard) -> list[T]:
    """Contiguous block ``shard.index`` of ``shard.count`` near-equal blocks of ``items`` (disjoint, deterministic,
    in order; the blocks of all shards together are ``items``)."""
    n, k = len(items), shard.count
    start = shard.index * (n // k) + min(shard.index, n % k)
    return list(items[start:start + n // k + (1 if shard.index < n % k else 0)])
