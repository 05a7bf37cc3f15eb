"""Miner throughput: scenes/s for scoring + region extraction + template descriptions on 1024x768 label maps.

Part 1 times each per-scene stage in this process (one core) on synthetic ADE20K-like label maps: 2-6 texture
bands with ragged boundaries plus 0-12 object blobs, so about half the scenes pass the threshold. Part 2 runs the
real ``detecture mine`` pipeline (template describer) on the same scenes written in the ADEChallengeData2016
layout, with 1 and 2 worker processes: the per-scene phase (decode label PNG, score, extract, decode and describe
the image, write image and masks of kept scenes) and the whole command (plus worker start-up, assembly,
histogram and contact sheet, a fixed cost of a few seconds).

    python benchmarks/bench_miner.py [--scenes 200] [--workers 1 2]

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

from detecture.miner.config import configs_dir, load_config
from detecture.miner.describers import TemplateDescriber
from detecture.miner.regions import extract_regions, region_map
from detecture.miner import run
from detecture.miner.run import MineOptions, mine
from detecture.miner.scoring import label_stats, score_scene
from detecture.miner.sources import read_label_png
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
    vocab = load_vocabulary(configs_dir() / "ade20k_classes.yaml")
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


def end_to_end(n: int, seed: int, workers: list[int]) -> list[tuple[int, float, float]]:
    """(workers, scenes/s of the per-scene phase, scenes/s of the whole command) on an ADE-layout copy."""
    rng = np.random.default_rng(seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ADEChallengeData2016"
        (root / "images" / "training").mkdir(parents=True)
        (root / "annotations" / "training").mkdir(parents=True)
        for i in range(n):
            label, image = synthetic_scene(rng)
            Image.fromarray(label).save(root / "annotations" / "training" / f"ADE_train_{i:08d}.png")
            Image.fromarray(image).save(root / "images" / "training" / f"ADE_train_{i:08d}.jpg", quality=90)
        for w in workers:
            phase = {"seconds": 0.0}
            real = run._run_scenes

            def timed_phase(*args, **kwargs):
                start = time.perf_counter()
                yield from real(*args, **kwargs)
                phase["seconds"] = time.perf_counter() - start

            run._run_scenes = timed_phase
            try:
                start = time.perf_counter()
                mine(MineOptions(source="ade20k", root=root, out=Path(tmp) / f"out{w}", workers=w))
                total = time.perf_counter() - start
            finally:
                run._run_scenes = real
            rows.append((w, n / phase["seconds"], n / total))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stages, kept = stage_table(args.scenes, args.seed)
    print(f"Miner benchmark: {args.scenes} synthetic {W}x{H} scenes ({kept} kept), {os.cpu_count()} CPU cores, "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\n| stage (1 core) | ms/scene | scenes/s |\n|---|---:|---:|")
    for name, sec in stages:
        print(f"| {name} | {sec * 1000:.2f} | {1 / sec:.0f} |")
    rows = end_to_end(args.scenes, args.seed, args.workers)
    print("\n| `detecture mine`, template describer | per-scene phase, scenes/s | whole command, scenes/s |")
    print("|---|---:|---:|")
    for w, phase, total in rows:
        print(f"| {w} worker(s) | {phase:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()
