"""Module-level work for the worker-pool tests: forkserver workers import what they run by its module's name."""

from __future__ import annotations


class TwoPartError(Exception):
    """An exception whose class cannot be rebuilt from its pickle: ``__init__`` takes two arguments, while the
    pickle holds the one message passed to ``Exception``."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")


def fail_on_three(item: int) -> int:
    if item == 3:
        raise TwoPartError(f"img{item}.png", "bad")
    return item


def sleep_briefly(item: int) -> int:
    """A short item, so that a signal finds the workers busy and the pool with work queued."""
    import time

    time.sleep(0.05)
    return item


def after_previous(item: tuple[int, str]) -> int:
    """Item ``i`` returns once the caller has marked item ``i - 1`` done in ``folder`` (a file named ``i - 1``), or
    raises after a few seconds: only a pool that hands back each result as it finishes lets every item return."""
    import time
    from pathlib import Path

    index, folder = item
    deadline = time.monotonic() + 5
    while index and not (Path(folder) / str(index - 1)).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"item {index - 1}'s result never reached the caller")
        time.sleep(0.005)
    return index
