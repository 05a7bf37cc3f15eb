"""Matplotlib with the headless backend, and atomic PNG writes for every figure the project saves."""

from __future__ import annotations

import os
from pathlib import Path

from .atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported only when a picture is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (readers never see half a file) and free it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)  # also when the write fails (disk full): a long run must not pile up open figures
    return Path(path)
