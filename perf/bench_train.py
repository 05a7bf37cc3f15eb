"""Training throughput: samples/s and peak memory per stage, stage 1 cached vs. uncached.

    python perf/bench_train.py                          # tiny backbones, CPU (CI-sized)
    python perf/bench_train.py --full-size 8b --image-size 1008   # Qwen3-VL-8B + SAM3, random weights (GPU)

Each mode runs in its own process (so peak memory is that mode's own): it builds the real ``Trainer`` on a mosaic
dataset of ``skimage.data`` textures, warms up, then times ``--steps`` optimizer steps (forward, backward, AdamW) of

* ``stage 1``: Qwen + SAM3 ViT run every step (frozen, no grad), head trained;
* ``stage 1 cached``: SEG states + SAM3 FPN features read from the feature cache (build time reported apart);
* ``stage 1 cached (SEG only)``: only SEG states cached, SAM3's ViT still runs;
* ``stage 2``: LoRA + SEG rows trained too (one Qwen pass with gradients, gradient checkpointing on);
* ``stage 2 4-bit``: the same on an NF4 Qwen loaded through the real 4-bit loader (needs ``--full-size`` and
  bitsandbytes; the random weights are saved to a temporary folder first).

``--full-size tiny`` runs the full-size code path with test-sized random models (a CPU dry run of a GPU check). A mode
whose worker fails gets a ``failed`` row (and its error on stderr) instead of stopping the others.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

log = logging.getLogger("bench_train")

MODES = {
    "stage 1": {"cache.enabled": False},
    "stage 1 cached": {"cache.enabled": True, "cache.vision": True},
    "stage 1 cached (SEG only)": {"cache.enabled": True, "cache.vision": False},
    "stage 2": {"cache.enabled": False},
    "stage 2 4-bit": {"cache.enabled": False, "model.quantization": "4bit"},
}
DEFAULT_MODES = ["stage 1", "stage 1 cached", "stage 1 cached (SEG only)", "stage 2"]


def peak_memory_gib() -> tuple[float, str]:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "CPU RSS"


def worker(mode: str, args: argparse.Namespace) -> dict:
    from train_fixture import write_mosaics

    from detecture.training.config import load_config
    from detecture.training.loop import Trainer

    stage = 2 if mode.startswith("stage 2") else 1
    overrides = {"model.tiny": not args.full_size, "optim.batch_size": args.batch_size, "optim.grad_accum": 1,
                 "optim.epochs": 2, "optim.stage1_epochs": 2 if stage == 1 else 0, "train.eval_every_epochs": 0,
                 "train.emission_every_steps": 0, "cache.dtype": "bfloat16", **MODES[mode]}
    backbones = None
    with tempfile.TemporaryDirectory() as tmp:
        data = write_mosaics(Path(tmp) / "data", n=args.samples, size=args.image_size)
        if args.full_size:
            from full_size import build_device, random_qwen, random_qwen_4bit, random_sam3

            device, dtype = build_device()
            pixels = args.image_size * args.image_size
            if MODES[mode].get("model.quantization") == "4bit":
                qwen = random_qwen_4bit(args.full_size, device, dtype, Path(tmp) / "qwen", pixels)
            else:
                qwen = random_qwen(args.full_size, device, dtype, pixels)
            backbones = (qwen, random_sam3(device, dtype, args.full_size))
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()  # drop load-time transients; the weights stay counted
        trainer = Trainer.from_config(load_config(None, overrides), data, Path(tmp) / "out", backbones=backbones)
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


def run_worker(mode: str, args: argparse.Namespace) -> dict:
    """One mode in a fresh process; a failure becomes a row with the worker's last error line."""
    cmd = [sys.executable, __file__, "--worker", mode, "--steps", str(args.steps), "--samples", str(args.samples),
           "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--threads", str(args.threads)]
    if args.full_size:
        cmd += ["--full-size", args.full_size]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(f"--- {mode} failed (exit {done.returncode}):\n{done.stderr[-4000:]}\n")
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"mode": mode, "error": (lines[-1] if lines else f"exit {done.returncode}")[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_in_process(mode: str, args: argparse.Namespace) -> dict:
    """``--same-process``: one mode here; a failure becomes a row, as with a worker process. The trainer's own
    printout goes to stderr so that stdout stays the Markdown table."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return worker(mode, args)
    except Exception as exc:  # noqa: BLE001 - reported as a failed row, the other modes still run
        log.exception("%s failed", mode)
        return {"mode": mode, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}


def format_row(r: dict, base: float | None) -> str:
    if "error" in r:
        return f"| {r['mode']} | failed: {r['error'].replace('|', '/')} | | | | |"
    speedup = f"{r['samples_per_s'] / base:.1f}x" if base else "-"
    return (f"| {r['mode']} | {r['samples_per_s']:.2f} | {speedup} | {r['peak_gib']:.2f} GiB ({r['memory_kind']}) "
            f"| {r['cache_build_s']:.1f} | {r['cache_mib_per_sample']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", choices=["tiny", "2b", "4b", "8b"],
                        help="random architectures (tiny: the same code path at test size)")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per mode")
    parser.add_argument("--samples", type=int, default=8, help="dataset size (the cache is built over it)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=64,
                        help="mosaic side in px (also the Qwen pixel budget with --full-size: 1008 for real sizes)")
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds over all modes (interleaved); the best round per mode is reported, which "
                             "filters out load from other jobs on a shared machine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (CPU)")
    parser.add_argument("--same-process", action="store_true",
                        help="run every mode in this process (dry runs: skips each worker's start-up; peak memory "
                             "is then cumulative)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "stage 2 4-bit" in args.modes and not args.full_size:
        parser.error("mode 'stage 2 4-bit' needs --full-size (the tiny trainer backbones are not quantised)")
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    print("| mode | samples/s | vs. stage 1 uncached | peak memory | cache build (s) | cache MiB/sample |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    best: dict[str, dict] = {}
    base = None
    for round_ in range(args.repeats):
        for mode in args.modes:
            row = run_in_process(mode, args) if args.same_process else run_worker(mode, args)
            if mode not in best or row.get("samples_per_s", -1.0) > best[mode].get("samples_per_s", -1.0):
                best[mode] = row
            if round_ == args.repeats - 1:  # rows as they are final: a run cut short keeps the finished modes
                if mode == "stage 1" and "samples_per_s" in best[mode]:
                    base = best[mode]["samples_per_s"]
                print(format_row(best[mode], base), flush=True)
    if any("error" in r for r in best.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
    gc.freeze()  # done: the exit's garbage collection would walk every object torch + transformers left alive
