"""Benchmark-metric speed vs. a straightforward K×M mask-loop implementation, and ``classical`` throughput on CPU.

    python perf/bench_metrics.py [--repeats 7] [--classical-images 10]

Per-sample metric time covers everything the runner does per sample after the method returns: static-dustbin
partition of (K, H, W) logits, contingency, Hungarian matching, matched / panoptic IoU, ARI, boundary F. The ground
truth label map is prepared once per sample in both implementations, as the runner does. Both implementations are
checked to agree before timing. Run on one core (thread pools limited to 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detecture.benchmark.metrics import gt_label_map, partition, score_labels  # noqa: E402

K_PRED, K_GT = 6, 5
OUTEX = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "outex"


def naive_score(logits: np.ndarray, gt_masks: np.ndarray) -> dict[str, float]:
    """Reference: argmax over a stacked dustbin, one boolean mask per region, K×M loops for every statistic."""
    full = np.concatenate([np.zeros((1, *logits.shape[1:]), logits.dtype), logits])
    pred = np.argmax(full, axis=0)
    gts = [m for m in gt_masks if m.any()]
    preds = [pred == k for k in range(1, full.shape[0]) if (pred == k).any()]
    iou = np.array([[(g & p).sum() / (g | p).sum() for p in preds] for g in gts])
    rows, cols = linear_sum_assignment(1 - iou)
    total = iou[rows, cols].sum()
    gt_lab = gt_label_map(gt_masks)
    gt_all = [gt_lab == v for v in range(int(gt_lab.max()) + 1)]
    pred_all = [pred == v for v in range(full.shape[0])]
    table = np.array([[np.count_nonzero(g & p) for p in pred_all] for g in gt_all], dtype=np.int64)
    n = int(table.sum())
    comb = lambda x: int((x * (x - 1) // 2).sum())  # noqa: E731
    index, a, b = comb(table), comb(table.sum(1)), comb(table.sum(0))
    expected = a * b / (n * (n - 1) // 2)
    ari = (index - expected) / ((a + b) / 2 - expected)
    disk = ndimage.generate_binary_structure(2, 1)
    disk = ndimage.iterate_structure(disk, 2)

    def edges(lab):
        e = np.zeros(lab.shape, bool)
        e[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        e[:-1, :] |= lab[:-1, :] != lab[1:, :]
        return e

    eg, ep = edges(gt_lab), edges(pred)
    prec = (ep & ndimage.binary_dilation(eg, disk)).sum() / max(ep.sum(), 1)
    rec = (eg & ndimage.binary_dilation(ep, disk)).sum() / max(eg.sum(), 1)
    bf = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"miou": total / len(rows), "panoptic_iou": total / max(len(gts), len(preds)), "ari": ari,
            "boundary_f": bf}


def fast_score(logits: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    s = score_labels(gt, partition(logits))
    return {"miou": s.miou, "panoptic_iou": s.panoptic_iou, "ari": s.ari, "boundary_f": s.boundary_f}


def make_case(size: int, smooth: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Blob-like logits (smoothed noise, as real models produce) or raw noise (worst case), and K_GT GT masks."""
    rng = np.random.default_rng(seed)
    small = rng.normal(size=(K_PRED, 64, 64)).astype(np.float32)
    if smooth:
        logits = np.stack([ndimage.zoom(ndimage.gaussian_filter(c, 4), size / 64, order=1) for c in small]) * 20
    else:
        logits = rng.normal(size=(K_PRED, size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    angle = np.arctan2(yy - size / 2, xx - size / 2)
    region = ((angle + np.pi) / (2 * np.pi) * K_GT).astype(int) % K_GT
    return logits.astype(np.float32), np.stack([region == k for k in range(K_GT)])


def timed_pair(fast, slow, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` CPU time (ms) of two functions, calls interleaved so both see the same machine load.

    CPU time of this single-threaded process, and the minimum rather than the median, because other jobs share the
    machine: they can only add time (cache and memory-bandwidth contention), never remove it.
    """
    fast(), slow()
    t_fast, t_slow = [], []
    for _ in range(repeats):
        for fn, times in ((fast, t_fast), (slow, t_slow)):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
    return min(t_fast) * 1000, min(t_slow) * 1000


def classical_speed(n: int) -> str:
    from PIL import Image

    from detecture.benchmark.methods import MethodOptions, build_method
    from detecture.benchmark.regimes import ORACLE, SampleRegime

    method = build_method("classical", MethodOptions())
    if OUTEX.is_dir():
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((OUTEX / "images").glob("*.png"))[:n]]
        what = f"Outex 512² (first {len(images)} images, K = 5)"
    else:
        from skimage import data

        images = [np.repeat(data.brick()[:, :, None], 3, axis=2)] * n
        what = f"skimage brick 512² ({n} images, K = 5)"
    method.segment(images[0], SampleRegime(ORACLE, 5, 5, "given-k"))
    t = time.process_time()
    for im in images:
        method.segment(im, SampleRegime(ORACLE, 5, 5, "given-k"))
    dt = time.process_time() - t
    rate = len(images) / dt
    return f"classical on {what}: {rate:.2f} images/s of one core's CPU time ({1000 / rate:.0f} ms/image)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--classical-images", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(f"K_pred = {K_PRED}, K_gt = {K_GT}, best-of-{args.repeats} CPU time, one thread\n")
    print("| size | logits | fast (ms) | K×M loops (ms) | speed-up |")
    print("|---|---|---|---|---|")
    for size in (512, 1008, 2048):
        for smooth in (True, False):
            logits, masks = make_case(size, smooth)
            gt = gt_label_map(masks)
            fast, slow = fast_score(logits, gt), naive_score(logits, masks)
            for key in fast:
                assert abs(fast[key] - slow[key]) < 1e-9, (key, fast[key], slow[key])
            t_fast, t_slow = timed_pair(lambda: fast_score(logits, gt), lambda: naive_score(logits, masks),
                                        args.repeats)
            kind = "smooth" if smooth else "noise"
            print(f"| {size}² | {kind} | {t_fast:.1f} | {t_slow:.1f} | {t_slow / t_fast:.1f}× |")
    if args.classical_images:
        print("\n" + classical_speed(args.classical_images))


if __name__ == "__main__":
    main()
