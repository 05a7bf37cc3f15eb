"""Inference throughput of ``DetecturePipeline``: images/s, per-stage time, peak memory, re-encode cost.

    python benchmarks/bench_segment.py                      # tiny backbones, CPU (CI-sized)
    python benchmarks/bench_segment.py --full-size 8b       # Qwen3-VL-8B + SAM3 architectures, random bf16 weights

Generation is timed on its own (random weights never stop early, so exactly ``--new-tokens`` tokens are generated,
about what K texture lines take); the grounding stages are timed with a forced response of K lines. The re-encode
row compares the KV-cached suffix pass with a full-sequence re-encode (what the published code does).
"""

from __future__ import annotations

import argparse
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


def build(args) -> DetecturePipeline:
    if not args.full_size:
        pipe = DetecturePipeline.tiny()
        # Real Qwen sequence lengths (about 1k visual tokens at 1008 px) even with the tiny model's narrow layers.
        pipe.qwen.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": args.size * args.size}
        return pipe
    from full_size import random_qwen, random_sam3

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    qwen, sam = random_qwen(args.full_size, device, dtype), random_sam3(device, dtype)
    head = DetectureHead(HeadConfig.for_backbones(qwen, sam)).to(device)
    return DetecturePipeline(qwen, sam, head)


def timed(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def peak_memory() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (CPU RSS)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", choices=("2b", "4b", "8b"), help="random-weight full-size architectures")
    parser.add_argument("--k", type=int, default=6, help="texture lines per image")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--size", type=int, default=1008, help="input image side")
    parser.add_argument("--new-tokens", type=int, default=120, help="tokens generated per image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    pipe = build(args)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batch)]
    responses = [format_response([DESCRIPTION] * args.k)] * args.batch
    regime = Regime.oracle(args.k)
    qwen = pipe.qwen

    inputs = qwen.build_inputs(images, ["Find the textures."] * args.batch).to(qwen.device)
    gen_inputs = {k: v for k, v in inputs.items() if k != "prefix_length"}
    with torch.no_grad():
        t_generate = timed(lambda: qwen.model.generate(**gen_inputs, max_new_tokens=args.new_tokens,
                                                       min_new_tokens=args.new_tokens, do_sample=False), 1)
        forced = qwen.build_inputs(images, ["Find the textures."] * args.batch, responses).to(qwen.device)
        cache = encode_prefix(qwen, forced)
        t_cached = timed(lambda: suffix_hidden_states(qwen, forced, cache), args.repeats)
        t_full = timed(lambda: suffix_hidden_states(qwen, forced, use_cache=False), args.repeats)
    pipe.segment(images, regime, "bridge", responses)  # warm-up, not counted in the stage totals
    pipe.timer.reset()
    t_segment = timed(lambda: pipe.segment(images, regime, "bridge", responses), args.repeats, warmup=False)
    stages = {k: v / args.repeats for k, v in pipe.timer.totals.items()}
    # With forced responses the "generate" stage is the prompt pass whose KV cache generation would have made.
    per_image = (t_generate + stages["reencode"] + stages["sam3"] + stages["head"]) / args.batch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    model = f"random {args.full_size} + SAM3" if args.full_size else "tiny backbones"
    print(f"# bench_segment: {model}, {device}, K={args.k}, batch={args.batch}, {args.size}px, "
          f"{args.new_tokens} generated tokens")
    print("| stage | seconds per call |")
    print("|---|---|")
    print(f"| generate ({args.new_tokens} tokens) | {t_generate:.3f} |")
    for name in ("reencode", "sam3", "head"):
        print(f"| {name} | {stages[name]:.3f} |")
    print(f"| segment() with forced response | {t_segment:.3f} |")
    print(f"| re-encode, cached suffix | {t_cached:.3f} |")
    print(f"| re-encode, full sequence | {t_full:.3f} |")
    print(f"\nper image (generate + re-encode + SAM3 + head): {per_image:.3f} s -> {1 / per_image:.2f} images/s")
    print(f"cached re-encode costs {t_cached / t_full:.0%} of a full-sequence re-encode")
    print(f"peak memory: {peak_memory()}")


if __name__ == "__main__":
    main()
