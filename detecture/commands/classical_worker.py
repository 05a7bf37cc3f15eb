"""Imported first in each ``segment --method classical`` worker process (and preloaded by the forkserver).

Thread-count variables are set before numpy / torch / scikit-learn load, because their BLAS and OpenMP runtimes read
them once at load time; the heavy imports then happen here, once, instead of per image.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from .. import result, service  # noqa: E402,F401
from ..classical import describe  # noqa: E402,F401
from ..utils.plotting import pyplot  # noqa: E402
from .. import output  # noqa: E402,F401


def single_threaded() -> None:
    """One thread for torch and for every BLAS / OpenMP pool loaded so far."""
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


pyplot()  # matplotlib's backend and font cache, ready before the first overlay
single_threaded()
