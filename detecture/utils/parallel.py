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
the run as an environment error (:class:`WorkerLost`) instead of waiting for them forever.

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
import time
from contextlib import ExitStack, contextmanager
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
WORKER_POLL_SECONDS = 0.5
WORKER_EXIT_GRACE_SECONDS = 0.2  # see _exit_status


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
    do not share the mask and may take the signal: in the main thread a recording handler defers it too, since
    ``Pool()`` would otherwise be interrupted mid-construction and leave its started workers to nobody.
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
                  preload: Sequence[str] = ()) -> Iterator[T]:
    """``fn`` over ``items`` in ``workers`` processes (in this process for one), yielding results as they finish.

    ``fn`` and ``initializer`` must be importable module-level functions; ``preload`` names modules the forkserver
    imports once for all workers. Any exception — a worker's environment or programming error, a worker that died
    (:class:`WorkerLost`), or Ctrl+C in the parent — terminates the workers at once and propagates; data errors are
    ``fn``'s to turn into results.
    """
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        yield from map(fn, items)
        return
    size = max(1, min(16, len(items) // (workers * 8)))
    # Chunked here, one chunk per task: with chunksize > 1 imap_unordered returns a plain generator, which has no
    # next(timeout=) for _watched to poll.
    chunks = [(fn, items[i:i + size]) for i in range(0, len(items), size)]
    with ExitStack() as stack:  # leaving it, normally or not, terminates the workers
        with _sigint_held():  # a Ctrl+C held back here is raised as the block ends: the pool is in the stack by then
            before = set(multiprocessing.active_children())
            pool = stack.enter_context(_context(preload).Pool(workers, initializer=_start_worker,
                                                              initargs=(os.getpid(), initializer, initargs)))
            started = [p for p in multiprocessing.active_children() if p not in before]
        for results in _watched(pool.imap_unordered(_run_chunk, chunks), len(chunks), started):
            yield from results


def _run_chunk(job: tuple[Callable[[Any], T], Sequence[Any]]) -> list[T]:
    """A worker's task: ``fn`` over a chunk of items. An exception goes back to the parent only if it survives the
    trip: one whose class cannot be rebuilt from its pickle (an ``__init__`` with other arguments) would kill the
    pool's result thread and leave the parent waiting forever, so it travels as a RuntimeError with its text."""
    fn, chunk = job
    try:
        return [fn(item) for item in chunk]
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
        raise


def _watched(results: Any, count: int, started: list[multiprocessing.process.BaseProcess]) -> Iterator[Any]:
    """The ``count`` results of a pool's ``imap_unordered``, raising :class:`WorkerLost` once one of the workers it
    ``started`` with has died: ``Pool`` replaces a dead worker but never its items, so the results would never
    all come. A death is seen on the worker's sentinel, which waiting on does not consume (:func:`_exit_status`)."""
    sentinels = {process.sentinel: process for process in started}
    for _ in range(count):
        while True:
            dead = multiprocessing.connection.wait(list(sentinels), timeout=0)
            if dead:
                raise WorkerLost(_exit_status(sentinels[dead[0]]))
            try:
                result = results.next(timeout=WORKER_POLL_SECONDS)
            except multiprocessing.TimeoutError:
                continue
            break
        yield result


def _exit_status(process: multiprocessing.process.BaseProcess) -> int:
    """The exit status of a worker that has died, once the pool has read it.

    ``Pool``'s own thread wakes on the same sentinel and reads the status at once. Under the forkserver the status is
    a message on the sentinel's pipe that only one reader gets: a second thread reading at the same moment gets 255
    ("unknown") and may keep it as the process's exit code, which turned "killed by SIGKILL" into "exited
    unexpectedly (status 255)" (tests/test_segment_faults.py shows it). So the pool's thread is given a moment first."""
    time.sleep(WORKER_EXIT_GRACE_SECONDS)
    return process.exitcode


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
