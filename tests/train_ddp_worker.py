"""Run by ``accelerate launch`` in test_train_loop.py: train with the tiny config, then every rank writes its own copy
of the weights.

Usage: train_ddp_worker.py DATA OUT [--max-steps N] [--resume] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from safetensors.torch import save_file

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
    trainer = Trainer(load_config(None, overrides), args.data, args.out, max_steps=args.max_steps)
    trainer.run(ResumeOptions(resume=args.resume))
    rank = trainer.acc.process_index
    own = {n: p.detach().cpu().contiguous() for n, p in trainer.module.named_parameters() if p.requires_grad}
    save_file(own, str(args.out / f"weights-rank{rank}.safetensors"))
    print(f"rank {rank} of {trainer.acc.num_processes} done, {trainer.state.optimizer_step} steps")


if __name__ == "__main__":
    main()
