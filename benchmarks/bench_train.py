"""Training throughput: samples/s and peak memory per stage, stage 1 cached vs. uncached.

    python benchmarks/bench_train.py                          # tiny backbones, CPU (CI-sized)
    python benchmarks/bench_train.py --full-size 8b           # Qwen3-VL-8B + SAM3 architectures, random weights (GPU)

Each mode runs in its own process (so peak memory is that mode's own): it builds the real ``Trainer`` on a mosaic
dataset of ``skimage.data`` textures, warms up, then times ``--steps`` optimizer steps (forward, backward, AdamW) of

* ``stage 1``: Qwen + SAM3 ViT run every step (frozen, no grad), head trained;
* ``stage 1 cached``: SEG states + SAM3 FPN features read from the feature cache (build time reported apart);
* ``stage 1 cached (SEG only)``: only SEG states cached, SAM3's ViT still runs;
* ``stage 2``: LoRA + SEG rows trained too (one Qwen pass with gradients, gradient checkpointing on).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODES = {
    "stage 1": {"cache.enabled": False},
    "stage 1 cached": {"cache.enabled": True, "cache.vision": True},
    "stage 1 cached (SEG only)": {"cache.enabled": True, "cache.vision": False},
    "stage 2": {"cache.enabled": False},
}


def peak_memory_gib() -> tuple[float, str]:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "CPU RSS"


def worker(mode: str, args: argparse.Namespace) -> dict:
    from train_fixture import write_mosaics

    from detecture.training.config import load_config
    from detecture.training.loop import Trainer

    stage = 2 if mode == "stage 2" else 1
    overrides = {"model.tiny": not args.full_size, "optim.batch_size": args.batch_size, "optim.grad_accum": 1,
                 "optim.epochs": 2, "optim.stage1_epochs": 2 if stage == 1 else 0, "train.eval_every_epochs": 0,
                 "train.emission_every_steps": 0, "cache.dtype": "bfloat16", **MODES[mode]}
    backbones = None
    with tempfile.TemporaryDirectory() as tmp:
        data = write_mosaics(Path(tmp) / "data", n=args.samples, size=args.image_size)
        if args.full_size:
            from full_size import random_qwen, random_sam3

            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            backbones = (random_qwen(args.full_size, device, dtype), random_sam3(device, dtype))
        trainer = Trainer(load_config(None, overrides), data, Path(tmp) / "out", backbones=backbones)
        trainer.set_stage(stage)
        build_s = 0.0
        if trainer.cache is not None:
            start = time.perf_counter()
            trainer.cache.build(trainer.module, trainer.acc)
            build_s = time.perf_counter() - start
        cache_mb = sum(f.stat().st_size for f in (Path(tmp) / "out").rglob("*.safetensors")) / 2**20

        def batches():
            epoch = 0
            while True:
                yield from trainer.epoch_batches(epoch, 0)
                epoch += 1

        stream = batches()

        def step() -> int:
            batch = next(stream).to(trainer.acc.device)
            with trainer.acc.autocast():
                terms = trainer.model(batch, stage)
            trainer.acc.backward(terms.total)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            return len(batch.ids)

        for _ in range(2):
            step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start, samples = time.perf_counter(), 0
        for _ in range(args.steps):
            samples += step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    memory, kind = peak_memory_gib()
    return {"mode": mode, "samples_per_s": samples / elapsed, "peak_gib": memory, "memory_kind": kind,
            "cache_build_s": build_s, "cache_mib_per_sample": cache_mb / args.samples if build_s else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", choices=["2b", "4b", "8b"], help="random full-size architectures")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per mode")
    parser.add_argument("--samples", type=int, default=8, help="dataset size (the cache is built over it)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64, help="mosaic side in px")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over all modes (interleaved); the best round per mode is reported, which "
                             "filters out load from other jobs on a shared machine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (CPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(worker(args.worker, args)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps), "--samples",
                   str(args.samples), "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
                   "--threads", str(args.threads)]
            if args.full_size:
                cmd += ["--full-size", args.full_size]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            if mode not in best or row["samples_per_s"] > best[mode]["samples_per_s"]:
                best[mode] = row
    rows = [best[m] for m in args.modes]
    base = next((r["samples_per_s"] for r in rows if r["mode"] == "stage 1"), None)
    print("| mode | samples/s | vs. stage 1 uncached | peak memory | cache build (s) | cache MiB/sample |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = f"{r['samples_per_s'] / base:.1f}x" if base else "-"
        print(f"| {r['mode']} | {r['samples_per_s']:.1f} | {speedup} | {r['peak_gib']:.2f} GiB ({r['memory_kind']}) "
              f"| {r['cache_build_s']:.1f} | {r['cache_mib_per_sample']:.3f} |")


if __name__ == "__main__":
    main()
