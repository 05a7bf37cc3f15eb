"""``segment --method classical``: the weightless segmenter over many images, in worker processes.

Per-image problems are small (the features are computed at 256 px), so parallelism belongs across images: each worker
(:func:`detecture.utils.parallel.unordered_map`) runs one BLAS thread and writes its own outputs, under a name the
parent claimed. The forkserver preloads :mod:`.classical_worker`, so N workers do not pay N imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..prompts import Regime
from ..utils.parallel import item_outcome, unordered_map

if TYPE_CHECKING:
    from ..classical import ClassicalParams

WORKER_MODULE = "detecture.commands.classical_worker"


@dataclass(frozen=True)
class ClassicalJob:
    """One image for a worker: what to read, where to write, and how to segment it (the request's ``seed``;
    ``params``: the segmenter's settings, pickled to the worker; ``None`` for its defaults)."""

    index: int
    path: Path
    stem: Path
    regime: Regime
    settings: dict
    seed: int
    params: "ClassicalParams | None" = None


def _segment(job: ClassicalJob) -> dict:
    from ..images import as_rgb_array, load_image_and_frame
    from ..output import write_outputs
    from ..service import segment_classical

    loaded, frame = load_image_and_frame(job.path)
    image = as_rgb_array(loaded)
    result = segment_classical(image, job.regime, seed=job.seed, params=job.params)
    return write_outputs(job.stem, job.path, image, result, job.regime, settings=job.settings, frame=frame)


def segment_one(job: ClassicalJob) -> tuple[int, dict | None, str | None]:
    """Segment one image and write its outputs: ``(index, table row, None)`` or ``(index, None, data error)``."""
    row, error = item_outcome(_segment, job)
    return job.index, row, error


def run_classical(jobs: list[ClassicalJob], workers: int) -> Iterator[tuple[int, dict | None, str | None]]:
    """Segment ``jobs`` with ``workers`` processes (in this process for one), yielding outcomes as they finish."""
    return unordered_map(segment_one, jobs, workers, preload=[WORKER_MODULE])
