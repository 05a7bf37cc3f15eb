"""Matplotlib with the headless backend, and atomic PNG writes for every figure the project saves."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported only when a picture is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def literal_text() -> Iterator[None]:
    """Text made inside the block is drawn as written: matplotlib otherwise reads a pair of ``$`` as mathtext, so
    a file name, query or description such as ``price $\\frac{1}$.png`` would fail to draw (or change) its figure.
    A context rather than a global setting, so a notebook's own figures keep their mathtext."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (readers never see half a file) and free it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)  # also when the write fails (disk full): a long run must not pile up open figures
    return Path(path)
