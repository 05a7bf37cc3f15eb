"""Inference throughput of ``DetecturePipeline``: images/s, per-stage time, peak memory, re-encode cost.

    python perf/bench_segment.py                                  # tiny backbones, CPU (CI-sized)
    python perf/bench_segment.py --full-size 8b                   # Qwen3-VL-8B + SAM3 architectures, random bf16
    python perf/bench_segment.py --full-size 8b --k 6 2 --batch 1 4   # one row per (K, batch), one model build

Generation is timed on its own (random weights never stop early, so exactly ``--new-tokens`` tokens are generated,
about what K texture lines take); the grounding stages are timed with a forced response of K lines. The re-encode
columns compare the KV-cached suffix pass with a full-sequence re-encode (what the published code does).
``--full-size tiny`` runs the full-size code path with test-sized random models (a CPU dry run of a GPU check).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detecture.bridge import DetectureHead, HeadConfig  # noqa: E402
from detecture.pipeline import DetecturePipeline  # noqa: E402
from detecture.prompts import Regime, format_response  # noqa: E402
from detecture.reencode import encode_prefix, suffix_hidden_states  # noqa: E402

DESCRIPTION = "Texture of weathered red brick, coarse mortar grid, rough matte surface, upper left"
STAGES = ("reencode", "sam3", "head")


def build(args) -> DetecturePipeline:
    if not args.full_size:
        pipe = DetecturePipeline.tiny()
        # Real Qwen sequence lengths (about 1k visual tokens at 1008 px) even with the tiny model's narrow layers.
        pipe.qwen.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": args.size * args.size}
        return pipe
    from full_size import build_device, random_qwen, random_sam3

    device, dtype = build_device()
    qwen = random_qwen(args.full_size, device, dtype, image_pixels=args.size * args.size)
    sam = random_sam3(device, dtype, args.full_size)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam)).to(device)
    return DetecturePipeline(qwen, sam, head)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup=None) -> float:
    """Mean seconds per call after one warm-up call (``warmup``, default ``fn`` itself; a cheaper stand-in is fine
    when it exercises the same kernels, e.g. a shorter generation)."""
    (warmup or fn)()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> str:
    """GPU: peak allocated since the last reset (this row's own); CPU: the process's peak RSS so far."""
    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (CPU RSS)"


def measure(pipe: DetecturePipeline, k: int, batch: int, args) -> dict:
    """One (K, batch) configuration: generation, the three grounding stages, and cached vs. full re-encode."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(batch)]
    responses = [format_response([DESCRIPTION] * k)] * batch
    qwen = pipe.qwen
    reset_peak_memory()
    inputs = qwen.build_inputs(images, ["Find the textures."] * batch).to(qwen.device)
    gen_inputs = {key: v for key, v in inputs.items() if key != "prefix_length"}

    def generate(tokens: int):
        return lambda: qwen.model.generate(**gen_inputs, max_new_tokens=tokens, min_new_tokens=tokens,
                                           do_sample=False)

    with torch.no_grad():
        t_generate = timed(generate(args.new_tokens), 1, warmup=generate(min(4, args.new_tokens)))
        forced = qwen.build_inputs(images, ["Find the textures."] * batch, responses).to(qwen.device)
        cache = encode_prefix(qwen, forced)
        t_cached = timed(lambda: suffix_hidden_states(qwen, forced, cache), args.repeats)
        t_full = timed(lambda: suffix_hidden_states(qwen, forced, use_cache=False), args.repeats)
        del cache
    regime = Regime.oracle(k)
    pipe.segment(images, regime, "bridge", responses)  # warm-up, not counted in the stage totals
    pipe.timer.reset()
    sync()
    start = time.perf_counter()
    for _ in range(args.repeats):
        pipe.segment(images, regime, "bridge", responses)
    sync()
    t_segment = (time.perf_counter() - start) / args.repeats
    stages = {name: pipe.timer.totals[name] / args.repeats for name in STAGES}
    # With forced responses the "generate" stage is the prompt pass whose KV cache generation would have made.
    per_image = (t_generate + sum(stages.values())) / batch
    return {"k": k, "batch": batch, "generate": t_generate, **stages, "segment": t_segment, "cached": t_cached,
            "full": t_full, "per_image": per_image, "memory": peak_memory()}


HEADER = ("| K | batch | generate (s) | re-encode (s) | SAM3 (s) | head (s) | segment() forced (s) "
          "| cached re-encode (s) | full re-encode (s) | cached / full | s per image | images/s | peak memory |")


def row(r: dict) -> str:
    return (f"| {r['k']} | {r['batch']} | {r['generate']:.3f} | {r['reencode']:.3f} | {r['sam3']:.3f} "
            f"| {r['head']:.3f} | {r['segment']:.3f} | {r['cached']:.3f} | {r['full']:.3f} "
            f"| {r['cached'] / r['full']:.0%} | {r['per_image']:.3f} | {1 / r['per_image']:.2f} | {r['memory']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", choices=("tiny", "2b", "4b", "8b"),
                        help="random-weight architectures (tiny: the same code path at test size)")
    parser.add_argument("--k", type=int, nargs="+", default=[6], help="texture lines per image (one row each)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="images per call (one row each)")
    parser.add_argument("--size", type=int, default=1008, help="input image side")
    parser.add_argument("--new-tokens", type=int, default=120, help="tokens generated per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = build(args)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    model = f"random {args.full_size} + SAM3" if args.full_size else "tiny backbones"
    print(f"# bench_segment: {model}, {device}, {args.size}px, {args.new_tokens} generated tokens, "
          f"{args.repeats} repeats\n")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|", flush=True)
    # Rows are printed as they finish, so a run cut short by a time limit still reports the configurations it did.
    for batch in args.batch:
        for k in args.k:
            print(row(measure(pipe, k, batch, args)), flush=True)
    print("\ns per image = (generate + re-encode + SAM3 + head) / batch; cached / full = the KV-cached suffix pass "
          "over a full-sequence re-encode")


if __name__ == "__main__":
    main()
    gc.freeze()  # done: the exit's garbage collection would walk every object torch + transformers left alive
