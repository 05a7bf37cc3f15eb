"""Conversion cost: wall time and peak RSS of ``detecture convert published`` on a synthetic file of the real shapes.

The synthetic ``best.pt`` has the published structure at full size (docs/ARCHITECTURE.md, The published checkpoint):
Qwen3-VL-8B's width 4096 and 36 layers of q/v LoRA (r 8), the full 151,670 x 4096 bf16 embedding and LM-head
matrices plus their AdamW moments (together ~7.5 GB, like the real file), the head and the (1, 1, 4096) dustbin. The
big tensors are built on file-backed memory (``torch.from_file`` on sparse files), so writing the fixture does not
need 7.5 GB of RAM either. The fixture is written and the conversion run (the real CLI) by two separate child
processes of a small parent that never imports torch, and the conversion's peak RSS is that child's own ``wait4``
usage: a child started from a large parent would inherit the parent's high-water mark in ``ru_maxrss``.

    python perf/bench_convert.py [--dir /tmp] [--keep]

Goal: peak RSS <= 1.5 GB (far below the file size). Needs ~16 GB free disk in ``--dir`` (fixture + scratch);
everything is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, VOCAB, LAYERS, RANK, Q_OUT, V_OUT = 4096, 151_670, 36, 8, 4096, 1024
TEXT, PROMPT = 1024, 256
Q = "qwen.base_model.model.model.language_model."


def big(scratch: Path, name: str):
    """A (VOCAB, HIDDEN) bf16 tensor on a sparse file (reads as zeros, costs no RAM until touched)."""
    import torch

    path = scratch / name
    numel = VOCAB * HIDDEN
    with open(path, "wb") as f:
        f.truncate(numel * 2)
    return torch.from_file(str(path), shared=True, size=numel, dtype=torch.bfloat16).view(VOCAB, HIDDEN)


def small(*shape: int):
    import torch

    return (torch.randn(*shape) * 0.02).to(torch.bfloat16)


def write_fixture(path: Path, scratch: Path) -> None:
    import torch

    trainable = {}
    for i in range(LAYERS):
        for proj, out in (("q_proj", Q_OUT), ("v_proj", V_OUT)):
            trainable[f"{Q}layers.{i}.self_attn.{proj}.lora_A.default.weight"] = small(RANK, HIDDEN)
            trainable[f"{Q}layers.{i}.self_attn.{proj}.lora_B.default.weight"] = small(out, RANK)
    trainable[f"{Q}embed_tokens.weight"] = big(scratch, "embed")
    trainable["qwen.base_model.model.lm_head.weight"] = big(scratch, "lm_head")
    trainable.update({
        "bridge.proj.0.weight": small(TEXT, HIDDEN), "bridge.proj.0.bias": small(TEXT),
        "bridge.proj.1.weight": small(TEXT), "bridge.proj.1.bias": small(TEXT),
        "mask_head.query_mlp.0.weight": small(PROMPT, PROMPT), "mask_head.query_mlp.0.bias": small(PROMPT),
        "mask_head.query_mlp.2.weight": small(PROMPT, PROMPT), "mask_head.query_mlp.2.bias": small(PROMPT),
        "mask_head.pixel_head.weight": small(PROMPT, PROMPT, 1, 1), "mask_head.pixel_head.bias": small(PROMPT),
    })
    dustbin = small(1, 1, HIDDEN)
    names = list(trainable)
    state = {}
    for index, name in enumerate(names):
        tensor = trainable[name]
        if tensor.shape[0] == VOCAB:
            moments = {"exp_avg": big(scratch, f"m{index}"), "exp_avg_sq": big(scratch, f"v{index}")}
        else:
            moments = {"exp_avg": torch.zeros_like(tensor), "exp_avg_sq": torch.zeros_like(tensor)}
        state[index] = {"step": torch.tensor(12345.0), **moments}
    groups = [{"name": "qwen_lora", "lr": 1e-6, "weight_decay": 0.01, "params": [i for i, n in enumerate(names)
                                                                                if "lora_" in n]},
              {"name": "bridge", "lr": 1e-5, "weight_decay": 0.01, "params": [i for i, n in enumerate(names)
                                                                             if n.startswith("bridge")]},
              {"name": "mask_head", "lr": 1e-4, "weight_decay": 0.01,
               "params": [i for i, n in enumerate(names) if n.startswith("mask_head")]},
              {"name": "seg_rows", "lr": 1e-4, "weight_decay": 0.01,
               "params": [i for i, n in enumerate(names) if n.endswith(("embed_tokens.weight", "lm_head.weight"))]}]
    torch.save({"epoch": 17, "phase": "stage2", "val_iou": 0.8, "dustbin_embed": dustbin,
                "model_trainable": trainable, "optimizer": {"state": state, "param_groups": groups}}, path)


def run_child(args: list[str]) -> tuple[float, int]:
    """Run a child process; returns (wall seconds, its own peak RSS in kB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the synthetic file")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # child mode: write the fixture only
    args = parser.parse_args()
    if args.write is not None:
        scratch = args.write.parent / "scratch"
        scratch.mkdir()
        write_fixture(args.write, scratch)
        shutil.rmtree(scratch)
        return
    work = Path(tempfile.mkdtemp(prefix="bench_convert_", dir=args.dir))
    try:
        seconds, _ = run_child([sys.executable, __file__, "--write", str(work / "best.pt")])
        size = (work / "best.pt").stat().st_size
        print(f"synthetic best.pt: {size / 1e9:.2f} GB written in {seconds:.1f} s")
        os.sync()  # flush the fixture first: the conversion's own fsyncs must not pay for 7.5 GB of dirty pages
        wall, peak_kb = run_child([sys.executable, "-m", "detecture", "convert", "published", str(work / "best.pt"),
                                   "--out", str(work / "head")])
        out_mb = sum(f.stat().st_size for f in (work / "head").rglob("*") if f.is_file()) / 1e6
        print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}")
        print(f"convert: wall {wall:.2f} s, peak RSS {peak_kb / 1024:.0f} MB (file {size / 1e9:.2f} GB, "
              f"output {out_mb:.1f} MB)")
        print(f"goal peak RSS <= 1536 MB: {'met' if peak_kb / 1024 <= 1536 else 'NOT met'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
