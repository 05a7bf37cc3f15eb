"""``segment --method classical``: the weightless segmenter over many images, one process and one BLAS thread each.

Per-image problems are small (the features are computed at 256 px), so parallelism belongs across images: each worker
runs single-threaded BLAS / OpenMP (threads spinning against each other on a shared CPU made k-means ~10x slower in
the benchmark's measurements) and writes its own outputs, under a name the parent chose up front. Workers fork from
a forkserver that imported the numerical stack once (:mod:`.classical_worker`), so N workers do not pay N imports.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..errors import DetectureError
from ..prompts import Regime
from ..utils.paths import InputSet

WORKER_MODULE = "detecture.commands.classical_worker"


def _init_worker() -> None:
    """Single-threaded numerics in each worker (already set up if the forkserver preloaded the worker module)."""
    import importlib

    importlib.import_module(WORKER_MODULE).single_threaded()


def _context():
    """forkserver where the platform has it (cheap workers, no inherited thread pools), else spawn."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([WORKER_MODULE])
        return context
    return multiprocessing.get_context("spawn")


def segment_one(path: Path, stem: Path, regime: Regime) -> tuple[dict | None, str | None]:
    """Segment one image and write its outputs; return (table row, None) or (None, error message)."""
    from ..service import as_image_array, segment_classical
    from ..output import write_outputs

    try:
        image = as_image_array(path)
        result = segment_classical(image, regime)  # one BLAS thread per worker: the API sets it
        return write_outputs(stem, path, image, result, regime), None
    except DetectureError as exc:
        return None, str(exc)
    except MemoryError:
        return None, f"{path}: not enough memory to segment this image"


def run_classical(images: list[Path], regime: Regime, out: Path, workers: int,
                  inputs: InputSet) -> tuple[list[dict], list]:
    """Segment ``images`` with ``workers`` processes (in-process for one); rows keep the input order."""
    from tqdm import tqdm

    from ..output import plan_outputs

    out.mkdir(parents=True, exist_ok=True)
    stems = plan_outputs(out, images, inputs)
    workers = max(1, min(workers, len(images)))
    outcomes: dict[int, tuple[dict | None, str | None]] = {}
    with tqdm(total=len(images), desc="segment (classical)", unit="img") as progress:
        if workers == 1:
            for i, (path, stem) in enumerate(zip(images, stems)):
                outcomes[i] = segment_one(path, stem, regime)
                progress.update(1)
        else:
            # Not a plain fork: the parent may already hold torch / OpenMP thread pools, which fork does not copy.
            with ProcessPoolExecutor(workers, mp_context=_context(), initializer=_init_worker) as pool:
                futures = {pool.submit(segment_one, path, stem, regime): i
                           for i, (path, stem) in enumerate(zip(images, stems))}
                for future in as_completed(futures):
                    outcomes[futures[future]] = future.result()
                    progress.update(1)
    rows = [outcomes[i][0] for i in range(len(images)) if outcomes[i][0] is not None]
    failures = [(images[i], outcomes[i][1]) for i in range(len(images)) if outcomes[i][1] is not None]
    return rows, failures
