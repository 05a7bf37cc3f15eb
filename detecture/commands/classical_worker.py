"""Preloaded by the forkserver of ``segment --method classical`` (and imported by each worker it forks).

Thread-count variables are set before numpy / scikit-learn load, because their BLAS and OpenMP runtimes read
them once at load time; the heavy imports then happen here, once, instead of per worker and per image.
"""

from __future__ import annotations

from ..utils.parallel import limit_thread_variables, single_threaded

limit_thread_variables()

from .. import result, service  # noqa: E402,F401  (scikit-learn, scipy, scikit-image)
from ..classical import describe  # noqa: E402,F401
from ..utils.plotting import pyplot  # noqa: E402
from .. import output  # noqa: E402,F401

pyplot()  # matplotlib's backend and font cache, ready before the first overlay
single_threaded()
