"""Orchestration of ``detecture mine``: per-scene work in parallel, resumable, then a deterministic assembly.

Resume protocol: a worker writes a scene's images and masks first and its result file
``mine_state/scenes/<scene>.json`` last (all atomically), so the result file's existence means "this scene is done".
The file lists the scene's images (sample ids) it was made for: a scene whose images changed since (a Textured-ADE20K
file added or removed) is redone (:func:`is_current`). A killed run loses at most the scenes in flight; a re-run
skips every scene with a current result file and redoes only the rest. ``metadata.json``, ``rejected.jsonl`` and the split files are rebuilt from all result files, sorted by id, so
an interrupted-and-resumed run and an uninterrupted one write byte-identical metadata. ``mine_state/run.json``
records the settings that shape per-scene results; resuming under different settings is refused.

Failures follow :mod:`detecture.utils.parallel`: only a data problem (unreadable label map or image, invalid
description) rejects a scene or sample; an environment error (disk full, out of memory, interrupt) or a describer
model that cannot load writes no result file and stops the run, so a re-run mines the scene. The describer's model is
loaded before the first scene, so it fails with nothing mined (and, before ``run.json`` is written, a re-run with the
model's path fixed in the config is not refused as a change of settings).

Past one process: under ``accelerate launch`` every process takes a share of the pending scenes and the main process
assembles the outputs once all are done; with ``--shard I/N`` a process mines share I of the scenes and writes no
metadata — the same command without ``--shard``, run once every shard finished, finds every scene done and only
assembles (the merge step). Either way the outputs are byte-identical to one process's.

Runs sharing ``--out`` at once claim each scene (:meth:`SceneMiner.claim`); a claim records whether its run writes the
merged dataset (:func:`claim_owner`). A run that finishes while other live runs still hold scenes leaves the merge to
them only where every one of them will merge (:class:`MergeLeft`); where one will not (a ``--shard`` run, or a claim
that does not say), it stops unfinished (:class:`~detecture.errors.RunStopped`, exit status 3) saying to run the same
command again once they finish, so no dataset is ever left unmerged by runs that all exit 0.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..data.metadata import SampleRecord, TextureEntry, save_binary_mask, save_metadata
from ..errors import InputError, RunStopped
from ..images import load_image
from ..utils import atomic
from ..utils.claims import folder_lock, is_alive, this_process
from ..utils.json_files import read_json_object
from ..utils.parallel import Ranks, Shard, default_workers, item_outcome, share, stop_unfinished, unordered_map
from ..utils.paths import InputSet, name_max, printable, require_dir, require_file
from .config import MinerConfig, load_config, packaged_file
from .describers import Describer, build_describer, validate_description
from .hub import export_dataset, remove_export_leftovers
from .names import STATE_DIR, image_name, mask_name, state_name, without_long_names
from .regions import Region, extract_regions, region_map
from .scoring import LabelStats, label_stats, score_scene
from .sources import Scene, SceneSource, candidate_ids, candidates, sample_id_of, without_id_clashes
from .textured import open_source
from .split import scene_split
from .vocabulary import Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

KEPT, LOW_SCORE, TOO_FEW, REJECTED = "kept", "low_score", "too_few_regions", "rejected"
ASSEMBLED = frozenset({"metadata.json", "metadata_train.json", "metadata_val.json", "rejected.jsonl", "summary.json",
                       "score_histogram.png"})  # what the merge step writes at the top of --out


@dataclass(frozen=True)
class MineOptions:
    source: str
    root: Path
    out: Path
    textured_roots: tuple[Path, ...] = ()  # Textured-ADE20K folders, merged; the first wins on duplicates
    degrees: tuple[float, ...] | None = None  # texture strengths to use (None: all)
    textured_mapping: Path | None = None  # optional {file name: {"base_ade20k_id", "degree"}} JSON
    subset: str = "training"
    describer: str = "template"
    workers: int | None = None  # None: the CPU cores (shared by the processes a launcher started on this machine)
    shard: Shard = Shard()  # --shard I/N: mine only this share, assemble nothing
    seed: int = 0
    limit: int | None = None
    config: Path | None = None
    vocabulary: Path | None = None
    threshold: float | None = None  # overrides the config's keep-threshold
    qwen: str | None = None  # overrides the config's describer.qwen_model
    device: str | None = None  # for the qwen describer
    arrow: bool = False
    push_to_hub: str | None = None


@dataclass(frozen=True)
class MergeLeft:
    """What :func:`mine` returns where this run mined its scenes but leaves the merge to another live run sharing
    ``out`` that still mines ``scenes`` scene(s) and writes the merged dataset when it finishes (it will find this
    run's scenes done): the caller says so, since nothing else shows the dataset is on its way."""

    scenes: int
    pid: object  # the process of one such run, to name it
    host: object


def claim_owner(shard: Shard) -> dict[str, Any]:
    """The owner a scene claim records: this process (:func:`~detecture.utils.claims.this_process`), whether its
    run writes the merged dataset (``merges``: a run without ``--shard``; in a launched run every process, since its
    main process merges once all are done) and, for a ``--shard`` run, its share, to name it. A finishing run reads
    ``merges`` to know whether it may leave the merge to the run that holds a scene (:func:`merges`)."""
    owner: dict[str, Any] = {**this_process(), "merges": shard.whole}
    if not shard.whole:
        owner["shard"] = shard.label()
    return owner


def merges(owner: dict[str, Any]) -> bool:
    """Whether the run that holds a claim writes the merged dataset when it finishes. A claim that does not say
    (written by a version before claims recorded it) counts as not merging: the finishing run then reports the
    dataset unmerged (a re-run merges it) instead of leaving the merge to what may be a ``--shard`` run."""
    return owner.get("merges") is True


def _run_name(owner: dict[str, Any]) -> str:
    """A run holding claims, as a message names it: its ``--shard`` share where known, and its process."""
    if owner.get("shard"):
        return f"the --shard {owner['shard']} run (process {owner.get('pid')})"
    if merges(owner):
        return f"a run without --shard (process {owner.get('pid')})"
    return f"process {owner.get('pid')} (its claim does not say whether it merges)"


def rejection(item_id: str, path: Path, reason: str) -> dict[str, str]:
    """A ``rejected.jsonl`` record. Its path and reason go through :func:`printable`: a folder name that is not UTF-8
    (``--root`` under a Latin-1 name) is in both, and the record is written as UTF-8 JSON."""
    return {"id": item_id, "path": printable(path), "reason": printable(reason)}


def _naming(path: Path, message: str) -> str:
    """An error message as a reason that names ``path`` (most already do)."""
    return message if str(path) in message else f"{path}: {message}"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write one scene's result file; its existence marks the scene as finished."""
    atomic.write_json(path, state)


class SceneMiner:
    """Everything needed to mine one scene; picklable, so each worker process gets a copy."""

    def __init__(self, source: SceneSource, vocab: Vocabulary, cfg: MinerConfig, describer: Describer, out: Path,
                 shard: Shard = Shard()):
        self.source, self.vocab, self.cfg, self.describer, self.out = source, vocab, cfg, describer, out
        # made in the run's main process: its workers claim scenes in its name
        self.owner = claim_owner(shard)

    def state_path(self, scene_id: str) -> Path:
        return self.out / STATE_DIR / "scenes" / state_name(scene_id)

    def claim_path(self, scene_id: str) -> Path:
        return self.out / STATE_DIR / "claims" / state_name(scene_id)

    def __call__(self, scene: Scene) -> dict[str, Any] | None:
        """Mine one scene and write its result file; None when another run sharing ``out`` finished or holds it
        (:meth:`claim`). A data problem rejects the scene (recorded: one bad scene must not end a 25k-scene run);
        any other error propagates with no result file, so the scene stays to do."""
        if not self.claim(scene):
            return None
        try:
            self._drop_stale(scene)
            state, error = item_outcome(self.mine_scene, scene)
            if error is not None:
                log.warning("scene %s rejected: %s", scene.id, error)
                self._remove_outputs(scene)
                state = {"scene": scene.id, "candidates": candidate_ids(scene), "status": REJECTED,
                         "rejected": [rejection(scene.id, scene.image or scene.label, error)]}
            write_state(self.state_path(scene.id), state)
        finally:
            self.release(scene)
        return state

    def claim(self, scene: Scene) -> bool:
        """Claim ``scene`` for this run, under a lock on ``mine_state/`` (:mod:`detecture.utils.claims`): refused when
        a result is there already (another run sharing ``out`` finished it since this one started) or another live
        process holds it."""
        with folder_lock(self.out / STATE_DIR):
            if self.read_result(scene) is not None or self.claimed_elsewhere(scene) is not None:
                return False
            atomic.write_json(self.claim_path(scene.id), self.owner)
        return True

    def claimed_elsewhere(self, scene: Scene) -> dict[str, Any] | None:
        """The process (host, pid) of another live run that holds ``scene``; None when none does."""
        try:
            owner = json.loads(self.claim_path(scene.id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return owner if owner != self.owner and is_alive(owner) else None

    def release(self, scene: Scene) -> None:
        """Drop this run's claim on ``scene`` (done, or the run stops); another run's is left alone."""
        path = self.claim_path(scene.id)
        try:
            if json.loads(path.read_text(encoding="utf-8")) == self.owner:
                path.unlink(missing_ok=True)
        except (OSError, ValueError):
            pass

    def read_result(self, scene: Scene) -> dict[str, Any] | None:
        """The scene's result file if an earlier run finished it for the images it has now (:func:`is_current`);
        None when there is none, it cannot be read (the scene is redone), or it was made for other images."""
        path = self.state_path(scene.id)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            state = None
        if not isinstance(state, dict):
            log.warning("%s: unreadable result file, mining the scene again", path)
            return None
        if not is_current(state, scene):
            log.info("%s: made for other images of scene %s than there are now, mining the scene again", path,
                     scene.id)
            return None
        return state

    def _drop_stale(self, scene: Scene) -> None:
        """Delete a result file made for other images of the scene, then the images and masks it names: images
        since removed would stay unreferenced. The result goes first, so a kill in between leaves the scene to
        do rather than a result naming deleted files."""
        path = self.state_path(scene.id)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return
        path.unlink(missing_ok=True)
        if not isinstance(old, dict):
            return
        for sample in old.get("samples", []):
            (self.out / "images" / Path(sample["image_path"]).name).unlink(missing_ok=True)
        for region in old.get("regions", []):
            (self.out / "masks" / Path(region["mask_path"]).name).unlink(missing_ok=True)

    def _remove_outputs(self, scene: Scene) -> None:
        """Delete the images and masks a scene rejected partway had already written: no record will name them."""
        names = [f"images/{image_name(sample_id, path)}" for sample_id, _, path in candidates(scene)]
        names += [f"masks/{mask_name(scene.id, k)}" for k in range(1, self.cfg.regions.max_regions + 1)]
        for name in names:
            (self.out / name).unlink(missing_ok=True)

    def _read_label(self, scene: Scene) -> tuple[np.ndarray, LabelStats]:
        label = self.source.read_label(scene)
        return label, label_stats(label, self.vocab.n_classes)

    def mine_scene(self, scene: Scene) -> dict[str, Any]:
        """Score, extract, describe and write one scene; returns its result record (see module docstring)."""
        state: dict[str, Any] = {"scene": scene.id, "candidates": candidate_ids(scene)}
        loaded, error = item_outcome(self._read_label, scene)
        if error is not None:
            reason = _naming(scene.label, error)
            rejected = [rejection(scene.id, scene.label, reason)]
            rejected += [rejection(sample_id_of(scene.id, v.degree), v.image,
                                   f"{v.image}: variant of scene {scene.id}, whose label map is unusable ({reason})")
                         for v in scene.variants]
            return {**state, "status": REJECTED, "rejected": rejected}
        label, stats = loaded
        score = score_scene(stats, self.vocab, self.cfg.scoring)
        state.update(score=score.total, components=score.components)
        if score.total < self.cfg.threshold:
            return {**state, "status": LOW_SCORE}
        regions = extract_regions(stats, self.vocab, self.cfg.regions)
        if not regions:
            return {**state, "status": TOO_FEW}
        rmap = region_map(label, regions, self.vocab.n_classes)
        samples, rejected = [], []
        for sample_id, degree, path in candidates(scene):
            sample, reason = self._sample(sample_id, degree, path, label.shape, rmap, regions)
            if sample is None:
                rejected.append(rejection(sample_id, path, reason))
            else:
                samples.append(sample)
        masks = []
        if samples:
            for k in range(1, len(regions) + 1):
                masks.append(f"masks/{mask_name(scene.id, k)}")
                save_binary_mask(self.out / masks[-1], rmap == k)
        state.update(
            status=KEPT if samples else REJECTED,
            regions=[{"name": r.name, "classes": list(r.classes), "area": round(r.area, 4), "mask_path": m}
                     for r, m in zip(regions, masks)],
            samples=samples,
            rejected=rejected,
        )
        return state

    def _sample(
        self, sample_id: str, degree: str, path: Path, shape: tuple[int, ...], rmap: np.ndarray, regions: list[Region]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Describe and copy one image of the scene; returns ``(sample, None)`` or ``(None, reason)``, the reason
        naming the image. A describer's data error rejects this image only: the scene's other images may be fine."""
        try:
            image = load_image(path)
        except InputError as exc:
            return None, str(exc)
        if (image.height, image.width) != tuple(shape):
            return None, f"{path}: image is {image.width}x{image.height} but its label map is {shape[1]}x{shape[0]}"
        descriptions, error = item_outcome(self.describer.describe, image, rmap, regions)
        if error is not None:
            return None, _naming(path, error)
        d = self.cfg.describer
        problems = [f"region {k} {why}: {text!r}" for k, text in enumerate(descriptions, start=1)
                    if (why := validate_description(text, d.min_words, d.max_words))]
        if len(descriptions) != len(regions):
            problems.append(f"{len(descriptions)} descriptions for {len(regions)} regions")
        if problems:
            return None, f"{path}: invalid description: " + "; ".join(problems)
        image_rel = f"images/{image_name(sample_id, path)}"
        atomic.write_bytes(self.out / image_rel, path.read_bytes())
        return {"id": sample_id, "degree": degree, "image_path": image_rel, "descriptions": descriptions}, None

    def remove_leftovers(self, scenes: list[Scene]) -> None:
        """Delete the temporaries that a killed or interrupted run left half-written for ``scenes`` (their images,
        masks and result files), so the finished output equals an uninterrupted run's. Only these scenes', the share
        this process is about to mine: other processes of a launch or a job array may be writing theirs now, and
        those another live run claimed are left out (checked under the claims' lock, so none is claimed meanwhile).
        One listing of each folder, however many scenes."""
        with folder_lock(self.out / STATE_DIR):
            self._remove_temporaries([s for s in scenes if self.claimed_elsewhere(s) is None])

    def _remove_temporaries(self, scenes: list[Scene]) -> None:
        max_k = self.cfg.regions.max_regions
        atomic.remove_temporaries_of(self.out / "images", {image_name(sample_id, path) for scene in scenes
                                                           for sample_id, _, path in candidates(scene)})
        atomic.remove_temporaries_of(self.out / "masks", {mask_name(s.id, k) for s in scenes
                                                          for k in range(1, max_k + 1)})
        atomic.remove_temporaries_of(self.out / STATE_DIR / "scenes", {self.state_path(s.id).name for s in scenes})


_WORKER: SceneMiner | None = None


def _init_worker(miner: SceneMiner) -> None:
    global _WORKER
    _WORKER = miner


def _work(scene: Scene) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER(scene)


def _run_scenes(miner: SceneMiner, pending: list[Scene], workers: int) -> Iterator[dict[str, Any]]:
    """Mine ``pending`` in this process (1 worker) or in worker processes, yielding results as they finish."""
    if workers == 1 or len(pending) <= 1:
        return map(miner, pending)
    return unordered_map(_work, pending, workers, initializer=_init_worker, initargs=(miner,),
                         preload=[__name__])


def _fingerprint(cfg: MinerConfig, vocab: Vocabulary, source: SceneSource, describer: str) -> dict[str, Any]:
    """The settings that shape per-scene results, under the config's own key names so a refusal names the key
    (``scoring.weights.balance``). Only those: the seed, ``split`` and ``report`` shape the merge step alone, which
    every run redoes, and the config file's comments and layout shape nothing."""
    words = {"min_words": cfg.describer.min_words, "max_words": cfg.describer.max_words}
    if describer == "qwen":
        words.update(qwen_model=cfg.describer.qwen_model, max_new_tokens=cfg.describer.max_new_tokens)
    fp = {"threshold": cfg.threshold, "scoring": asdict(cfg.scoring), "regions": asdict(cfg.regions),
          "describer": {"name": describer, **words}, "vocabulary_sha256": vocab.digest, "source": source.describe()}
    return json.loads(json.dumps(fp))  # as run.json reads back: tuples become lists


def _whole_file_fingerprint(cfg: MinerConfig, vocab: Vocabulary, source: SceneSource, describer: str
                            ) -> dict[str, Any]:
    """The form of ``run.json`` that records the config file's digest rather than its keys; an output folder that
    has one resumes when the same file is given (its record is then rewritten in :func:`_fingerprint`'s form)."""
    fp: dict[str, Any] = {"config_sha256": cfg.digest, "threshold": cfg.threshold,
                          "vocabulary_sha256": vocab.digest, "source": source.describe(), "describer": describer}
    if describer == "qwen":
        fp["qwen_model"] = cfg.describer.qwen_model
    return fp


def _check_fingerprint(out: Path, fingerprint: dict[str, Any], whole_file: dict[str, Any]) -> None:
    """Refuse to resume ``out`` under settings other than those its ``run.json`` records (written by
    :func:`_record_fingerprint` once the run is under way); ``whole_file`` is the settings in the form of a record
    that holds the config file's digest (:func:`_whole_file_fingerprint`)."""
    path = out / STATE_DIR / "run.json"
    if path.exists():
        try:
            previous = read_json_object(path, "record of the run's settings", InputError)
        except InputError as exc:
            raise InputError(f"{exc}; delete {out / STATE_DIR} to start over") from None
        if "config_sha256" in previous:
            fingerprint = whole_file
        if previous != fingerprint:
            changed = list(_differences(previous, fingerprint))
            raise InputError(
                f"{out}: was mined with different settings ({', '.join(changed)}); "
                f"mine into a new --out, or delete {out / STATE_DIR} to start over"
            )


def _record_fingerprint(out: Path, fingerprint: dict[str, Any]) -> None:
    """Write ``run.json`` once, or rewrite one that holds the config file's digest (it matched, or
    :func:`_check_fingerprint` would have refused) with the settings themselves."""
    path = out / STATE_DIR / "run.json"
    if not path.exists() or "config_sha256" in read_json_object(path, "record of the run's settings", InputError):
        atomic.write_json(path, fingerprint)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted names of the settings that differ (``source.textured_roots``), so the refusal says what changed."""
    for key in sorted(old.keys() | new.keys()):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            yield from _differences(old[key], new[key], f"{prefix}{key}.")
        elif old.get(key) != new.get(key):
            yield prefix + key


def _merge_elsewhere(out: Path, busy: list[tuple[str, dict[str, Any]]]) -> MergeLeft:
    """Where live runs still hold ``busy`` scenes (id, claim owner): leave the merge to them if every one writes the
    merged dataset when it finishes (it will find this run's scenes done); otherwise raise
    :class:`~detecture.errors.RunStopped`, naming the runs, since a ``--shard`` run never merges and exiting 0 here
    would leave no merged dataset while every run reported success."""
    owners = {(o.get("host"), o.get("pid")): o for _, o in busy}
    if all(merges(o) for o in owners.values()):
        scene, owner = busy[0]
        log.info("%d scene(s) are still being mined by another run into %s (e.g. %s, by process %s on %s); it writes "
                 "the merged dataset when it finishes", len(busy), out, scene, owner.get("pid"), owner.get("host"))
        return MergeLeft(scenes=len(busy), pid=owner.get("pid"), host=owner.get("host"))
    names = ", ".join(_run_name(o) for o in sorted(owners.values(), key=_run_name))
    which = "not all of which write it" if any(merges(o) for o in owners.values()) else "which do not write it"
    raise RunStopped(f"{out}: the merged dataset was not written: {len(busy)} scene(s) are still being mined by other "
                     f"runs, {which}: {names}; run the same command again once they finish")


def is_current(state: dict[str, Any], scene: Scene) -> bool:
    """Whether a result file still holds for ``scene``: made for the images the scene has now (a Textured-ADE20K
    file added or removed since changes them), or made without looking at them (a low score, too few regions).

    A result file without the ``candidates`` list counts the ids its samples and rejections name instead; where
    those cannot say (a scene rejected as a whole, a scene without an original image whose label map failed), the
    scene is redone."""
    if state.get("status") in (LOW_SCORE, TOO_FEW):
        return True
    ids = candidate_ids(scene)
    if "candidates" in state:
        return state["candidates"] == ids
    named = {s["id"] for s in state.get("samples", [])} | {r["id"] for r in state.get("rejected", [])}
    return named == set(ids)


def _load_done(miner: SceneMiner, scenes: list[Scene]) -> dict[str, dict[str, Any]]:
    """Result files of scenes finished, for their present images, by an earlier run; any other scene is redone."""
    done = {}
    for scene in scenes:
        state = miner.read_result(scene)
        if state is not None:
            done[scene.id] = state
    return done


def records_from_states(states: list[dict[str, Any]], seed: int, val_fraction: float) -> list[SampleRecord]:
    """Unified-metadata records for every kept sample, sorted by id, with scene/degree/split/score extras."""
    records = []
    for st in states:
        if st["status"] != KEPT:
            continue
        split = scene_split(st["scene"], seed, val_fraction)
        for s in st["samples"]:
            textures = tuple(TextureEntry(d, r["mask_path"]) for d, r in zip(s["descriptions"], st["regions"]))
            extra = {"scene": st["scene"], "degree": s["degree"], "split": split, "score": st["score"],
                     "texture_classes": [r["name"] for r in st["regions"]]}
            records.append(SampleRecord(id=s["id"], image_path=s["image_path"], textures=textures, extra=extra))
    return sorted(records, key=lambda r: r.id)


def assemble(out: Path, states: list[dict[str, Any]], cfg: MinerConfig, seed: int,
             unusable_files: Sequence[dict[str, str]] = ()) -> list[SampleRecord]:
    """Write metadata.json, metadata_{train,val}.json and rejected.jsonl deterministically from the result files.

    ``unusable_files`` are the source index's rejections (files that belong to no scene), listed with the rest.
    """
    records = records_from_states(states, seed, cfg.split.val_fraction)
    save_metadata(out / "metadata.json", records)
    for split in ("train", "val"):
        save_metadata(out / f"metadata_{split}.json", [r for r in records if r.extra["split"] == split])
    rejected = [r for st in states for r in st.get("rejected", [])] + list(unusable_files)
    rejected.sort(key=lambda r: (r["id"], r["path"]))
    atomic.write_text(out / "rejected.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
    return records


def mine(opts: MineOptions, describer: Describer | None = None) -> dict[str, Any] | MergeLeft | None:
    """Run the whole miner; returns the summary (also written to ``<out>/summary.json``), ``None`` where this
    process assembles nothing (a ``--shard`` run, or a launched process other than the main one), or
    :class:`MergeLeft` where another live run sharing ``out`` will merge. Raises
    :class:`~detecture.errors.RunStopped` where scenes are still held by live runs that will not merge (module
    docstring).

    ``describer`` overrides the one named in ``opts`` (tests pass a describer wrapping a tiny model).
    """
    with stop_unfinished("mine"):
        return _mine(opts, describer)


def _mine(opts: MineOptions, describer: Describer | None) -> dict[str, Any] | MergeLeft | None:
    require_dir(opts.root, "dataset root")
    for textured_root in opts.textured_roots:
        require_dir(textured_root, "Textured-ADE20K root")
    if opts.textured_mapping is not None:
        require_file(opts.textured_mapping, "Textured-ADE20K mapping")
    InputSet([opts.root, *opts.textured_roots, opts.textured_mapping, opts.config,
              opts.vocabulary]).check_output_dir(opts.out)
    cfg = load_config(opts.config)
    if opts.threshold is not None:
        if not 0 <= opts.threshold <= 100:
            raise InputError(f"--threshold must be in [0, 100], got {opts.threshold}")
        cfg = replace(cfg, threshold=float(opts.threshold))
    if opts.qwen is not None:
        cfg = replace(cfg, describer=replace(cfg.describer, qwen_model=opts.qwen))
    source = open_source(opts.source, opts.root, opts.subset, opts.textured_roots, opts.degrees, opts.textured_mapping)
    vocab = load_vocabulary(opts.vocabulary or packaged_file(source.vocabulary_file)).with_names(source.class_names())
    # before the describer: a bad --degrees fails before any model loads
    index = without_long_names(without_id_clashes(source.index()), name_max(opts.out), cfg.regions.max_regions)
    ranks = Ranks()
    if describer is None:
        kwargs = {"device": opts.device or ranks.device} if opts.describer == "qwen" else {}
        describer = build_describer(opts.describer, cfg.describer, **kwargs)
    scenes = index.scenes
    if opts.limit is not None:
        scenes = scenes[: opts.limit]
    out = Path(opts.out)
    fingerprint = _fingerprint(cfg, vocab, source, describer.name)
    _check_fingerprint(out, fingerprint, _whole_file_fingerprint(cfg, vocab, source, describer.name))
    miner = SceneMiner(source, vocab, cfg, describer, out, opts.shard)
    mine_here = share(scenes, opts.shard)  # job arrays: a fixed share of all scenes, whatever is done already
    states = _load_done(miner, mine_here)
    ranks.wait()  # every launched process sees the same finished scenes before any writes one
    pending = share([s for s in mine_here if s.id not in states], Shard(ranks.index, ranks.count))
    if pending:  # a model that cannot load stops the run here, with no scene recorded (module docstring)
        describer.load()
    out.mkdir(parents=True, exist_ok=True)
    _record_fingerprint(out, fingerprint)
    miner.remove_leftovers(pending)
    workers = max(1, opts.workers or default_workers())
    if not describer.in_worker and workers > 1:
        log.info("the %s describer runs in the main process: using 1 worker", describer.name)
        workers = 1
    log.info("%d scenes, %d already mined, %d to do here with %d worker(s)", len(mine_here), len(states),
             len(pending), workers)
    skipped = 0
    with tqdm(total=len(pending), unit="scene", desc="mining", disable=None) as progress:
        for state in _run_scenes(miner, pending, workers):
            skipped += state is None
            progress.update()
    if skipped:
        log.info("%d scene(s) skipped: another run into %s finished or is mining them", skipped, out)
    ranks.wait()
    if not opts.shard.whole or not ranks.is_main:
        return None
    with folder_lock(out):  # one merge at a time: two runs finishing together would delete each other's temporaries
        return _assemble_all(opts, out, miner, scenes, cfg, index)


def _assemble_all(opts: MineOptions, out: Path, miner: SceneMiner, scenes: list[Scene], cfg: MinerConfig,
                  index) -> dict[str, Any] | MergeLeft:
    """The merge step: metadata, rejections, summary and pictures from every scene's result file, unless other
    live runs sharing ``out`` still mine some of the scenes (:func:`_merge_elsewhere`)."""
    from .review import build_summary, write_contact_sheet, write_score_histogram

    states = _load_done(miner, scenes)
    busy = [(s.id, owner) for s in scenes if s.id not in states and (owner := miner.claimed_elsewhere(s))]
    if busy:
        return _merge_elsewhere(out, busy)
    missing = [s.id for s in scenes if s.id not in states]
    if missing:  # another process stopped unfinished
        raise RunStopped(f"{out}: {len(missing)} scene(s) have no result yet (e.g. {missing[0]}); re-run the same "
                         "command to mine them")
    atomic.remove_temporaries_of(out, ASSEMBLED)  # a run killed while assembling; only this process writes them
    atomic.remove_temporaries(out / "review")
    remove_export_leftovers(out)  # with or without --arrow this time: a killed export's copies are never needed
    ordered = [states[s.id] for s in scenes]
    records = assemble(out, ordered, cfg, opts.seed, index.rejected)
    summary = build_summary(ordered, records, cfg, index)
    atomic.write_json(out / "summary.json", summary)
    write_score_histogram(out / "score_histogram.png", [st["score"] for st in ordered if "score" in st], cfg.threshold)
    write_contact_sheet(out, records, opts.seed, cfg.report.contact_sheet_samples)
    if opts.arrow or opts.push_to_hub:
        export_dataset(out, records, push_to_hub=opts.push_to_hub)
    return summary
