"""Miner throughput: scenes/s for scoring + region extraction + template descriptions on 1024x768 label maps.

Part 1 times each per-scene stage in this process (one core) on synthetic ADE20K-like label maps: 2-6 texture
bands with ragged boundaries plus 0-12 object blobs, so about half the scenes pass the threshold. Part 2 runs the
real ``detecture mine`` pipeline (template describer) on the same scenes written in the ADEChallengeData2016
layout, with 1 and 2 worker processes: the per-scene phase (decode label PNG, score, extract, decode and describe
the image, write image and masks of kept scenes) and the whole command (plus worker start-up, assembly,
histogram and contact sheet, a fixed cost of a few seconds).

Part 3 is Textured-ADE20K as TextureSAM releases it: indexing a synthetic flat all-strengths folder of empty files
(20,210 scenes x 11 strengths = 222,310 names, ``<scene>_textured_degree<eta>.jpg``), then ``detecture mine`` on
the part-2 scenes with 11 flat variants each (every kept scene writes 12 samples from one scoring pass).

    python perf/bench_miner.py [--scenes 200] [--workers 1 2] [--index-scenes 20210] [--strengths 11]

The goal is >= 50 scenes/s per core for scoring + extraction (25k ADE20K scenes in < 5 min on 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from detecture.miner.config import load_config, packaged_file
from detecture.miner.describers import TemplateDescriber
from detecture.miner.regions import extract_regions, region_map
from detecture.miner import orchestrate as run
from detecture.miner.orchestrate import MineOptions, mine
from detecture.miner.scoring import label_stats, score_scene
from detecture.miner.sources import read_label_png
from detecture.miner.textured import open_source
from detecture.miner.vocabulary import load_vocabulary

H, W = 768, 1024
TEXTURE_IDS = [1, 2, 3, 4, 5, 6, 7, 10, 12, 14, 17, 22, 27, 30, 35, 47, 53, 61, 69, 95, 129]
OBJECT_IDS = [8, 11, 13, 15, 16, 20, 21, 24, 31, 37, 42, 44, 70, 83, 99, 136, 139]


def synthetic_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An ADE-like label map (uint8) and a matching noisy RGB image."""
    k = int(rng.integers(2, 7))
    classes = rng.choice(TEXTURE_IDS, size=k, replace=False)
    cuts = np.sort(rng.uniform(0.1, 0.9, size=k - 1)) * H
    x = np.arange(W)
    label = np.full((H, W), classes[-1], np.uint8)
    rows = np.arange(H)[:, None]
    for c, cut in zip(classes[:-1][::-1], cuts[::-1]):
        wobble = cut + 25 * np.sin(x / rng.uniform(30, 200) + rng.uniform(0, 6)) + rng.normal(0, 3, W)
        label[rows < wobble[None, :]] = c
    yy, xx = np.ogrid[:H, :W]
    for _ in range(int(rng.integers(0, 13))):
        cy, cx, ry, rx = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(20, 150), rng.uniform(20, 150)
        label[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.choice(OBJECT_IDS)
    palette = rng.integers(0, 256, size=(151, 3)).astype(np.int16)
    image = np.clip(palette[label] + rng.normal(0, 20, (H, W, 3)), 0, 255).astype(np.uint8)
    return label, image


def timed(fn, items) -> tuple[list, float]:
    start = time.perf_counter()
    out = [fn(*item) for item in items]
    return out, time.perf_counter() - start


def stage_table(n: int, seed: int) -> list[tuple[str, float]]:
    cfg = load_config()
    vocab = load_vocabulary(packaged_file("ade20k_classes.yaml"))
    describer = TemplateDescriber(cfg.describer)
    rng = np.random.default_rng(seed)
    scenes = [synthetic_scene(rng) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (label, _) in enumerate(scenes):
            paths.append(Path(tmp) / f"{i}.png")
            Image.fromarray(label).save(paths[-1])
        _, t_read = timed(read_label_png, [(p,) for p in paths])
    stats, t_stats = timed(lambda lab, _: label_stats(lab, vocab.n_classes), scenes)
    scores, t_score = timed(lambda s: score_scene(s, vocab, cfg.scoring), [(s,) for s in stats])
    kept = [(s, lab, img) for s, sc, (lab, img) in zip(stats, scores, scenes) if sc.total >= cfg.threshold]
    regions, t_extract = timed(
        lambda s, lab, _: (lambda r: (r, region_map(lab, r, vocab.n_classes)))(extract_regions(s, vocab, cfg.regions)),
        kept,
    )
    described = [(Image.fromarray(img), rmap, r) for (r, rmap), (_, _, img) in zip(regions, kept) if r]
    _, t_describe = timed(describer.describe, described)
    logging.getLogger(__name__).info("%d of %d synthetic scenes kept", len(kept), n)
    per_scene = {
        "read label PNG": t_read / n,
        "label stats (bincount pass)": t_stats / n,
        "score (all components)": t_score / n,
        "extract regions + region map (kept)": t_extract / max(len(kept), 1),
        "template describe (kept)": t_describe / max(len(described), 1),
    }
    share = len(kept) / n
    core = t_stats / n + t_score / n + share * (per_scene["extract regions + region map (kept)"]
                                                + per_scene["template describe (kept)"])
    per_scene["score + extract + describe (per scene)"] = core
    per_scene["... incl. label PNG decode"] = core + t_read / n
    return list(per_scene.items()), len(kept)


def strengths(n: int) -> list[str]:
    """The release's strength spellings for ``n`` evenly spaced etas in [0, 1] (0.0, 0.1, ..., 1.0 for n = 11)."""
    return [f"{k / max(n - 1, 1):.1f}" for k in range(n)]


def index_flat(n_scenes: int, n_strengths: int, repeats: int = 3) -> tuple[int, float, float, float, int]:
    """(names, seconds to create the empty files, best wall and CPU seconds to index, variants found) for a
    synthetic flat all-strengths folder next to an ADE20K root of empty image / annotation files (indexing reads
    names only). CPU time is reported too: on a shared machine the wall time mostly measures the other jobs."""
    with tempfile.TemporaryDirectory() as tmp:
        ade, flat = Path(tmp) / "ADEChallengeData2016", Path(tmp) / "ADE20K_textured_images"
        for folder in (ade / "images" / "training", ade / "annotations" / "training", flat):
            folder.mkdir(parents=True)
        start = time.perf_counter()
        for i in range(n_scenes):
            (ade / "images" / "training" / f"ADE_train_{i:08d}.jpg").touch()
            (ade / "annotations" / "training" / f"ADE_train_{i:08d}.png").touch()
            for eta in strengths(n_strengths):
                (flat / f"ADE_train_{i:08d}_textured_degree{eta}.jpg").touch()
        created = time.perf_counter() - start
        best, best_cpu, variants = float("inf"), float("inf"), 0
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            index = open_source("ade20k", ade, textured_roots=[flat]).index()
            best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - start_cpu)
            variants = index.counts["variants"]
    return n_scenes * n_strengths, created, best, best_cpu, variants


def write_ade(root: Path, n: int, seed: int) -> None:
    """``n`` synthetic scenes in the ADEChallengeData2016 layout."""
    rng = np.random.default_rng(seed)
    (root / "images" / "training").mkdir(parents=True)
    (root / "annotations" / "training").mkdir(parents=True)
    for i in range(n):
        label, image = synthetic_scene(rng)
        Image.fromarray(label).save(root / "annotations" / "training" / f"ADE_train_{i:08d}.png")
        Image.fromarray(image).save(root / "images" / "training" / f"ADE_train_{i:08d}.jpg", quality=90)


def timed_mine(opts: MineOptions) -> tuple[float, float, dict]:
    """(seconds of the per-scene phase, seconds of the whole command, summary) of one ``mine`` run."""
    phase = {"seconds": 0.0}
    real = run._run_scenes

    def timed_phase(*args, **kwargs):
        start = time.perf_counter()
        yield from real(*args, **kwargs)
        phase["seconds"] = time.perf_counter() - start

    run._run_scenes = timed_phase
    try:
        start = time.perf_counter()
        summary = mine(opts)
        return phase["seconds"], time.perf_counter() - start, summary
    finally:
        run._run_scenes = real


def end_to_end(n: int, seed: int, workers: list[int], n_strengths: int) -> tuple[list, list]:
    """Rows (workers, scenes/s of the per-scene phase, scenes/s of the whole command) on an ADE-layout copy, and
    rows (workers, scenes/s, samples/s of the phase, samples written) with ``n_strengths`` flat variants per scene
    (hard links to the scene image: the miner decodes, describes and copies each one as a separate sample)."""
    rows, textured_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root, flat = Path(tmp) / "ADEChallengeData2016", Path(tmp) / "ADE20K_textured_images"
        write_ade(root, n, seed)
        flat.mkdir()
        for image in (root / "images" / "training").iterdir():
            for eta in strengths(n_strengths):
                os.link(image, flat / f"{image.stem}_textured_degree{eta}.jpg")
        for w in workers:
            phase, total, _ = timed_mine(MineOptions(source="ade20k", root=root, out=Path(tmp) / f"out{w}", workers=w))
            rows.append((w, n / phase, n / total))
            phase, _, summary = timed_mine(MineOptions(source="ade20k", root=root, out=Path(tmp) / f"tex{w}",
                                                       workers=w, textured_roots=(flat,)))
            textured_rows.append((w, n / phase, summary["samples"] / phase, summary["samples"]))
    return rows, textured_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index-scenes", type=int, default=20210, help="scenes of the synthetic flat index")
    parser.add_argument("--strengths", type=int, default=11, help="textured variants per scene (0.0 ... 1.0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stages, kept = stage_table(args.scenes, args.seed)
    print(f"Miner benchmark: {args.scenes} synthetic {W}x{H} scenes ({kept} kept), {os.cpu_count()} CPU cores, "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\n| stage (1 core) | ms/scene | scenes/s |\n|---|---:|---:|")
    for name, sec in stages:
        print(f"| {name} | {sec * 1000:.2f} | {1 / sec:.0f} |")
    rows, textured_rows = end_to_end(args.scenes, args.seed, args.workers, args.strengths)
    print("\n| `detecture mine`, template describer | per-scene phase, scenes/s | whole command, scenes/s |")
    print("|---|---:|---:|")
    for w, phase, total in rows:
        print(f"| {w} worker(s) | {phase:.1f} | {total:.1f} |")
    print(f"\n| `detecture mine` + {args.strengths} flat variants/scene | scenes/s | samples/s | samples written |")
    print("|---|---:|---:|---:|")
    for w, scenes_s, samples_s, samples in textured_rows:
        print(f"| {w} worker(s) | {scenes_s:.1f} | {samples_s:.1f} | {samples} |")
    names, created, seconds, cpu, variants = index_flat(args.index_scenes, args.strengths)
    print(f"\nFlat index: {names} names ({args.index_scenes} scenes x {args.strengths} strengths), "
          f"created in {created:.1f} s; indexed (listing, name parsing, scene assembly; best of 3) in "
          f"{seconds:.2f} s wall, {cpu:.2f} s CPU = {names / cpu:,.0f} names per CPU-second; {variants} variants")


if __name__ == "__main__":
    main()
