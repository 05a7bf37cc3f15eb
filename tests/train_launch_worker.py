"""Run by ``accelerate launch`` (DDP or FSDP) in test_train_loop.py: train with the tiny config, then every rank
writes its copy of the weights (whole under FSDP too).

Usage: train_launch_worker.py DATA OUT [--max-steps N] [--resume] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from detecture.training.config import load_config
from detecture.training.loop import ResumeOptions, Trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    overrides = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.overrides)}
    trainer = Trainer.from_config(load_config(None, overrides), args.data, args.out, max_steps=args.max_steps)
    trainer.run(ResumeOptions(resume=args.resume))
    rank = trainer.acc.process_index
    own = {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu().contiguous()  # FSDP: collective
           for n, p in trainer.module.named_parameters() if p.requires_grad}
    save_file(own, str(args.out / f"weights-rank{rank}.safetensors"))
    print(f"rank {rank} of {trainer.acc.num_processes} done, {trainer.state.optimizer_step} steps")


if __name__ == "__main__":
    main()
