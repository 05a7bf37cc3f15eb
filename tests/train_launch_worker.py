"""Run by ``accelerate launch`` (DDP or FSDP) in test_train_loop.py: train with the tiny config, then every rank
writes its copy of the weights (whole under FSDP too).

Usage: train_launch_worker.py DATA OUT [--max-steps N] [--resume] [--then-stopped OUT2 --after N] [KEY=VALUE ...]

``--then-stopped OUT2 --after N``: once the run into OUT is done, the same process trains a second run from scratch
into OUT2 that stops after N optimizer steps (as ``--max-steps N`` stops one), saving a launch's start-up; the resume
of OUT2 is a launch of its own.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import yaml
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from detecture.training.config import load_config
from detecture.training.loop import ResumeOptions, Trainer


def train(data: Path, out: Path, overrides: dict, max_steps: int | None, resume: bool) -> None:
    trainer = Trainer.from_config(load_config(None, overrides), data, out, max_steps=max_steps)
    trainer.run(ResumeOptions(resume=resume))
    rank = trainer.acc.process_index
    own = {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu().contiguous()  # FSDP: collective
           for n, p in trainer.module.named_parameters() if p.requires_grad}
    save_file(own, str(out / f"weights-rank{rank}.safetensors"))
    print(f"rank {rank} of {trainer.acc.num_processes} done, {trainer.state.optimizer_step} steps, {out.name}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--then-stopped", type=Path)
    parser.add_argument("--after", type=int)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    overrides = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.overrides)}
    train(args.data, args.out, overrides, args.max_steps, args.resume)
    if args.then_stopped is not None:
        train(args.data, args.then_stopped, overrides, args.after, resume=False)
    gc.freeze()  # the process ends here: skips the exit's garbage collection over torch + transformers (seconds)


if __name__ == "__main__":
    main()
