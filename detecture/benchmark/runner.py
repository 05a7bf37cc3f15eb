"""Run methods × datasets cells: resumable, one model in memory at a time, optionally sharded with ``accelerate``.

Order is method-major: a method is loaded once, runs every dataset that still has pending samples, and is released
before the next method loads. Every finished sample — including one that raised — is appended to its cell's JSONL
shard at once, so a killed run continues where it stopped; a complete cell is skipped unless ``force``. Under
``accelerate launch`` each process takes its share of the pending samples and the main process merges the shards
once everyone is done; with ``--shard I/N`` (job arrays) a run scores share I of every cell and merges nothing: the
same command without ``--shard`` then finds every sample done and merges and reports (:mod:`detecture.utils.parallel`).
With ``workers`` (the methods of :data:`~.methods.WORKER_METHODS`), worker processes score a process's share of a cell
and the process records each result as it arrives, so a killed run loses only the samples being scored.

A sample fails (recorded, the run goes on) on a data error only: an unreadable sample, a method output that cannot be
scored. An environment error (disk full, out of memory) or a bug stops the run with nothing recorded for the sample.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from ..data.metadata import SampleRecord
from ..errors import DatasetError, DetectureError, InputError, MethodError, RunStopped
from ..utils.parallel import Ranks, Shard, share, unordered_map
from ..utils.paths import InputSet
from . import cell_store
from .datasets import BenchDataset, image_stem, open_dataset
from .methods import WORKER_METHODS, Method, MethodOptions, build_method, check_model_keys
from .methods.predictions import DEFAULT_PATTERN, PredictionsMethod
from .scoring import score_against
from .regimes import AUTONOMOUS, RegimeSpec, SampleRegime, check_plan, dispatch_mode, regime_for

log = logging.getLogger(__name__)

DIGEST = "data"  # a result's key: the digest of its sample's record and files when it was scored
INPUT = "input"  # a result's key: the digest of the method's own input for the sample (Method.input_digest)


@dataclass
class BenchConfig:
    """One benchmark invocation (the CLI builds it; tests build it directly)."""

    out: Path
    methods: list[str]
    datasets: list[str]
    predictions: list[tuple[str, str]] = field(default_factory=list)
    predictions_pattern: str = DEFAULT_PATTERN
    data_root: str | None = None
    limit: int | None = None
    force: bool = False
    retry_failed: bool = False
    regime: RegimeSpec | None = None
    gallery: int = 4
    options: MethodOptions = field(default_factory=MethodOptions)
    shard: Shard = field(default_factory=Shard)
    workers: int = 1  # worker processes per process for the methods of WORKER_METHODS
    protocol: str = "ours"  # or "published": the published evaluator's scoring (benchmark/published_protocol.py)


@dataclass
class Cell:
    method: Method
    dataset: BenchDataset
    regime: RegimeSpec
    mode: str
    records: list[SampleRecord]
    protocol: str = "ours"

    def directory(self, out: Path) -> Path:
        """Where the cell's results live (results of the published protocol beside ours, never mixed with them)."""
        return cell_store.cell_dir(out, self.dataset.name, self.method.name, self.protocol)

    def partition_path(self, out: Path, sample_id: str) -> Path:
        return cell_store.partition_path(out, self.dataset.name, self.method.name, self.protocol, sample_id)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """What the cell's results depend on beyond its dataset's and method's names and its protocol (which name
        its folder): the regime and the method's settings. (What they depend on in the data is each sample's own: a
        result records the digest of its sample's files, :func:`_pending`.) Computed once per run: a method's
        settings may digest its weight files."""
        return {"regime": {"kind": self.regime.kind, "k": self.regime.k}, "method": self.method.settings()}


def build_plan(config: BenchConfig) -> tuple[list[Method], list[BenchDataset], list[Cell]]:
    """Open datasets, build (unloaded) methods and check every cell's dispatch rule and records — before any weights
    load. Whether a method's models can load is checked by :func:`run_benchmark`, for the methods with samples to
    score only: a finished cell is reported again without its model."""
    if not config.methods and not config.predictions:
        raise InputError("no methods selected")
    if not config.datasets:
        raise InputError("no datasets selected")
    check_model_keys(config.options.models, config.methods)
    datasets = [open_dataset(spec, config.data_root) for spec in config.datasets]
    cell_store.check_distinct("dataset", [(str(d.root), d.name) for d in datasets],
                              "give one folder another name (a symbolic link will do)")
    inputs = [d.root for d in datasets] + [folder for _, folder in config.predictions] + [config.options.head]
    InputSet(inputs).check_output_dir(config.out)
    methods: list[Method] = [build_method(name, config.options) for name in config.methods]
    methods += [
        PredictionsMethod(config.options, name, folder, config.predictions_pattern)
        for name, folder in config.predictions
    ]
    for method in methods:
        method.check()
    cell_store.check_distinct("method", [(repr(m.name), m.name) for m in methods], "give one another name")
    regimes = {d.name: regime_for(d.key, config.regime) for d in datasets}
    check_plan([(m.kind, d.name, regimes[d.name]) for m in methods for d in datasets])
    cells = []
    for method in methods:
        for d in datasets:
            records = d.records[: config.limit] if config.limit else d.records
            method.check_records(d.name, records)
            cells.append(Cell(method, d, regimes[d.name], dispatch_mode(method.kind, regimes[d.name]), records,
                              config.protocol))
    return methods, datasets, cells


def _sample_regime(cell: Cell, k_gt: int, record: SampleRecord) -> SampleRegime:
    if cell.regime.kind == AUTONOMOUS:
        return SampleRegime(AUTONOMOUS, None, k_gt, cell.mode, record.id, image_stem(record))
    k = cell.regime.k if cell.regime.k is not None else k_gt
    if k < 1:
        raise DatasetError(f"sample {record.id!r}: oracle regime needs K ≥ 1 but every ground-truth mask is empty")
    return SampleRegime(cell.regime.kind, k, k_gt, cell.mode, record.id, image_stem(record))


@dataclass(frozen=True)
class ScoredSample:
    """What scoring a sample gives its recorder: the result, the warnings about its data (logged even where the
    sample then failed), and its partition when the gallery draws it."""

    result: dict[str, Any]
    warnings: list[str]
    labels: np.ndarray | None


def score_sample(cell: Cell, record: SampleRecord, draw: bool) -> ScoredSample:
    """Segment and score one sample; a data error becomes a recorded failure, never a vanished sample. Writes and
    logs nothing, so that a worker process can score it for the process that records it (:func:`keep_sample`)."""
    start = time.perf_counter()
    base: dict[str, Any] = {"id": record.id, DIGEST: cell.dataset.digest(record)}
    method_input = cell.method.input_digest(record)
    if method_input is not None:
        base[INPUT] = method_input
    warnings: list[str] = []
    labels = None
    try:
        sample, truth, warnings = cell.dataset.load(record, cell.protocol)
        output = cell.method.segment(sample.image, _sample_regime(cell, truth.k_gt, record))
        if output.logits.shape[1:] != sample.image.shape[:2]:
            raise MethodError(
                f"logits are {output.logits.shape[2]}x{output.logits.shape[1]} but the image is "
                f"{sample.image.shape[1]}x{sample.image.shape[0]}"
            )
        published = cell.protocol == "published" and output.model_logits is not None
        score, partition = score_against(output.model_logits if published else output.logits, truth)
        labels = partition if draw else None
        base.update(status="ok", protocol=cell.protocol, **score.as_dict(), k_out=int(output.logits.shape[0]),
                    descriptions=output.descriptions, warnings=warnings)
    except DetectureError as exc:  # a failing sample is recorded and the run goes on
        base.update(status="failed", error=str(exc))
    base["seconds"] = round(time.perf_counter() - start, 4)
    base[cell_store.FINISHED] = time.time()
    return ScoredSample(base, warnings, labels)


def keep_sample(cell: Cell, scored: ScoredSample, out: Path) -> dict[str, Any]:
    """Log a scored sample's warnings and failure and replace its gallery partition; returns the result to record.
    An earlier result's partition goes in any case: a picture of a result replaced (by a failure, or by a result not
    drawn) would be shown beside the new one."""
    result = scored.result
    if scored.warnings:
        log.warning("%s/%s: %s", cell.dataset.name, result["id"], "; ".join(scored.warnings))
    if result["status"] == "failed":
        log.warning("%s × %s, sample %s failed: %s", cell.method.name, cell.dataset.name, result["id"],
                    result["error"])
    path = cell.partition_path(out, result["id"])
    path.unlink(missing_ok=True)
    if scored.labels is not None:
        cell_store.save_partition(path, scored.labels)
    return result


def run_sample(cell: Cell, record: SampleRecord, out: Path, save_partition: bool) -> dict[str, Any]:
    """Score one sample in this process and keep it (:func:`score_sample`, :func:`keep_sample`)."""
    return keep_sample(cell, score_sample(cell, record, save_partition), out)


def _pending(cell: Cell, out: Path, retry_failed: bool, shard: Shard, gallery: int, force: bool = False
             ) -> list[SampleRecord]:
    """This shard's samples without a result for their files as they are now (with ``retry_failed``, also those
    recorded as failures): the new record, finished later, replaces the old one when the cell is read. With
    ``force``, every one of them: :func:`_force` deletes their results.

    A sample whose input changed since its result was recorded is scored again (:func:`_changed`), so a cell never
    holds results of two versions of its inputs. So is one of the first ``gallery`` samples scored without its
    partition saved (an earlier run drew fewer), which the gallery would otherwise show as missing."""
    if force:
        return share(cell.records, shard)
    done = cell_store.read_cell(cell.directory(out))
    if retry_failed:
        done = {i: r for i, r in done.items() if r.get("status") == "ok"}
    drawn = {r.id for r in cell.records[:gallery]}
    pending = []
    for record in share(cell.records, shard):
        held = done.get(record.id)
        change = _changed(cell, record, held) if held is not None else None
        if change is not None:
            log.info("%s/%s: %s changed since it was scored; scoring it again", cell.dataset.name, record.id, change)
            held = None
        elif held is not None and held.get("status") == "ok" and record.id in drawn \
                and not cell.partition_path(out, record.id).exists():
            log.info("%s/%s: scoring it again to draw it in the gallery", cell.dataset.name, record.id)
            held = None
        if held is None:
            pending.append(record)
    return pending


def _changed(cell: Cell, record: SampleRecord, held: dict[str, Any]) -> str | None:
    """What of a sample's input differs from the one its result ``held`` was scored on, or ``None``.

    The sample's files (:meth:`BenchDataset.digest`; a result recorded without that digest is kept, since rescoring
    a model method's results costs hours). The method's own input (:meth:`Method.input_digest`, a precomputed
    prediction): a result recorded without its digest is scored again, since nothing tells it was made from the
    file there now, and reading a label map again costs little."""
    if held.get(DIGEST) not in (None, cell.dataset.digest(record)):
        return "its files"
    method_input = cell.method.input_digest(record)
    if method_input is not None and held.get(INPUT) != method_input:
        return f"its input to {cell.method.name}"
    return None


def _check_settings(cells: list[Cell], out: Path) -> None:
    """Refuse to add to a cell whose results were made under other settings (another regime, seed or
    ``--classical-config``): its means would mix two experiments. A cell that holds no result yet (a run stopped
    before its first sample finished) mixes nothing: it takes the new settings, which the caller records."""
    for cell in cells:
        change = cell_store.settings_change(cell.directory(out), cell.settings)
        if change and cell_store.read_cell(cell.directory(out)):
            raise InputError(f"{cell.method.name} × {cell.dataset.name} in {out} was scored with other settings "
                             f"({change}); rerun it with --force or use a new --out")
        if change:
            log.info("%s × %s: no results yet, so its settings are replaced (%s)", cell.method.name,
                     cell.dataset.name, change)


def _force(cell: Cell, out: Path, limited: bool) -> None:
    """``--force``: delete the results the run is to redo. Under ``--limit`` those of the samples inside the limit,
    keeping the cell's others, unless the cell's settings changed: its other results then belong to another
    experiment and would be mixed into the new one's mean, so the whole cell goes."""
    name, method = cell.dataset.name, cell.method.name
    if limited and not cell_store.settings_change(cell.directory(out), cell.settings):
        cell_store.drop_records(out, name, method, cell.protocol, [r.id for r in cell.records])
    else:
        cell_store.clear_cell(out, name, method, cell.protocol)


def run_benchmark(config: BenchConfig, ranks: Ranks | None = None) -> list[Cell]:
    """Run every pending sample of every cell (of this shard); returns the cells (for the report)."""
    ranks = ranks or Ranks()
    if config.force and not config.shard.whole:
        raise InputError("--force with --shard would delete the other shards' results: run with --force once "
                         "without --shard, or use a new --out")
    if config.options.device is None and ranks.device is not None:
        config = replace(config, options=replace(config.options, device=ranks.device))  # one GPU per process
    methods, _, cells = build_plan(config)
    out = Path(config.out)
    # Every process reads the pending lists here, before the waits below, so before any records a result: each then
    # splits the same lists by rank (one that read them after another began recording results would split fewer
    # samples, and the samples between the two splits would be scored by no one).
    pending = [_pending(c, out, config.retry_failed, config.shard, config.gallery, config.force) for c in cells]
    todos = [[(c, p) for c, p in zip(cells, pending) if c.method is method and p] for method in methods]
    # A model that cannot load is refused before --force deletes anything and before the first load (a later
    # method would otherwise fail after hours on the earlier ones); a method with nothing to score loads nothing.
    for method, todo in zip(methods, todos):
        if todo:
            method.check_models()
    if config.force and ranks.is_main:
        for cell in cells:
            _force(cell, out, config.limit is not None)
    ranks.wait()
    _check_settings(cells, out)  # every process, before any weights load
    if ranks.is_main:
        for cell in cells:
            cell_store.write_settings(cell.directory(out), cell.settings)
    ranks.wait()
    scored: list[str] = []  # the methods whose cells this run has scored samples of
    for method, todo in zip(methods, todos):
        mine = [c for c in cells if c.method is method]
        for c in mine:
            if not any(c is t for t, _ in todo):
                log.info("%s × %s: complete, skipped (use --force to rerun)", method.name, c.dataset.name)
        if todo:
            log.info("loading %s", method.name)
            _load(method, out, scored)
            try:
                for cell, pending in todo:
                    _run_cell(cell, pending, out, config.gallery, ranks, config.shard, config.workers)
            finally:
                method.close()
            scored.append(method.name)
        if ranks.is_main and config.shard.whole:
            for c in mine:
                cell_store.merge_cell(c.directory(out), [r.id for r in c.dataset.records])
        ranks.wait()
    return cells


def _load(method: Method, out: Path, scored: list[str]) -> None:
    """Load ``method``'s models. One that fails to load once this run has scored other methods' samples (``scored``
    names those methods) stops the run unfinished (:class:`RunStopped`, not a "nothing done" error): their results
    are kept, and the same command run again once the cause is fixed skips them and goes on."""
    try:
        method.load()
    except RunStopped:
        raise
    except DetectureError as exc:
        if not scored:
            raise
        raise RunStopped(f"{exc}; bench stopped unfinished, keeping the results of {', '.join(scored)} in {out} "
                         "(re-run the same command once this is fixed to finish it)") from None


def _run_cell(cell: Cell, pending: list[SampleRecord], out: Path, gallery: int, ranks: Ranks, shard: Shard,
              workers: int) -> None:
    """This process's share of ``pending`` (every process computed the same list), appended to its own part file,
    numbered by its place among all shards and processes so that concurrent job-array tasks never share one."""
    drawn = {r.id for r in cell.records[:gallery]}
    mine = share(pending, Shard(ranks.index, ranks.count))
    writer = cell_store.ShardWriter(cell.directory(out), ranks.shard(shard).index)
    try:
        # closing(): an interrupt raised between two results stops the workers at once, not when the generator is
        # collected (the traceback holds this frame)
        with tqdm(total=len(mine), leave=False, unit="img", desc=f"{cell.method.name} × {cell.dataset.name}",
                  disable=not ranks.is_main) as bar, closing(_results(cell, mine, out, drawn, workers)) as results:
            for result in results:
                writer.write(result)
                bar.update()
    finally:
        writer.close()
    ranks.wait()


def _results(cell: Cell, records: list[SampleRecord], out: Path, drawn: set[str], workers: int
             ) -> Iterator[dict[str, Any]]:
    """The results of ``records``, each kept (:func:`keep_sample`) as it finishes: scored in this process, or in
    ``workers`` worker processes for a method of :data:`WORKER_METHODS`, handed one sample at a time so that none
    finished waits there for another."""
    if workers == 1 or len(records) <= 1 or cell.method.kind not in WORKER_METHODS:
        for record in records:
            yield run_sample(cell, record, out, record.id in drawn)
        return
    jobs = [(record, record.id in drawn) for record in records]
    with closing(unordered_map(_score_job, jobs, workers, initializer=_init_worker, initargs=(cell,),
                               preload=[__name__, type(cell.method).__module__], chunk=1)) as scored:
        for sample in scored:
            yield keep_sample(cell, sample, out)


_WORKER_CELL: Cell | None = None


def _init_worker(cell: Cell) -> None:
    """A worker's cell, sent once rather than with each of its samples."""
    global _WORKER_CELL
    _WORKER_CELL = cell


def _score_job(job: tuple[SampleRecord, bool]) -> ScoredSample:
    """A worker's task: one sample of its cell, and whether the gallery draws it."""
    assert _WORKER_CELL is not None
    record, draw = job
    return score_sample(_WORKER_CELL, record, draw)


def cell_records(cell: Cell, out: Path) -> list[dict[str, Any]]:
    """The recorded samples of a cell in dataset order (missing samples are simply absent)."""
    recorded = cell_store.read_cell(cell.directory(out))
    return [recorded[r.id] for r in cell.records if r.id in recorded]


def share_counts(cells: list[Cell], out: Path, shard: Shard) -> tuple[int, int, int]:
    """(requested, ok, failed) samples of a ``--shard`` run's share of ``cells``, as recorded (the rest are
    missing)."""
    requested = ok = failed = 0
    for cell in cells:
        recorded = cell_store.read_cell(cell.directory(out))
        mine = share(cell.records, shard)
        requested += len(mine)
        ok += sum(recorded.get(r.id, {}).get("status") == "ok" for r in mine)
        failed += sum(recorded.get(r.id, {}).get("status") == "failed" for r in mine)
    return requested, ok, failed


def metric_values(records: list[dict[str, Any]], metric: str) -> np.ndarray:
    return np.array([r[metric] for r in records if r.get("status") == "ok"], dtype=np.float64)
