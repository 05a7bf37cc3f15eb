"""``detecture train``: train the Bridge, dustbin, mask head, Qwen LoRA and ``<|seg|>`` rows.

The losses and the schedule are described in docs/ARCHITECTURE.md, Training.

Multi-GPU: ``accelerate launch --config_file configs/accelerate/{ddp,fsdp}.yaml -m detecture train ...``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .exit_status import OK
from .model_options import add_qwen, add_sam3
from .two_values import refuse_two_values
from .unserved import refuse_with_tiny

logger = logging.getLogger(__name__)

# The config keys of the real backbones: load_backbones builds tiny ones from the seed without reading them (and the
# LoRA would take a tiny Qwen for a quantized one). Two are also set by an option of their own (its dest).
TINY_IGNORES = ("model.qwen", "model.sam3", "model.quantization", "model.attn_implementation")
OWN_OPTIONS = {"model.qwen": "qwen", "model.sam3": "sam3"}

EPILOG = """\
examples:
  detecture train --config configs/train.yaml --data datasets/mined --val-data datasets/RWTD --out runs/bridge
  detecture train --tiny --data DIR --out /tmp/run --epochs 2 --set optim.stage1_epochs=1   (CPU smoke run, offline)
  accelerate launch --config_file configs/accelerate/ddp.yaml -m detecture train --config configs/train.yaml \\
      --data DIR --out runs/bridge                               (DDP; set num_processes in the yaml)
  accelerate launch --config_file configs/accelerate/fsdp.yaml -m detecture train ...
                                              (FSDP2: shards the frozen bf16 backbones; not with 4-bit Qwen)
  detecture train --config configs/train.yaml --data DIR --out runs/bridge --resume          (exact continuation)
  detecture train --init checkpoints/detecture-neurips2026 --data my_set --out runs/finetune
                                              (fine-tune a converted or trained head + adapter, under its contract)
  detecture train ... --out runs/bridge --resume --epochs 30 --resume-lr-scale 0.15 --resume-warmup-epochs 2
                                              (micro-warm-up restart: extend 20 -> 30 epochs, keep AdamW moments)
outputs in --out: train_log.csv, eval_log.csv, tensorboard/, loss_curves.png, config.json, contract.json,
  checkpoints/step-*/ (safetensors + JSON; latest.json), final/ (head + adapter for 'detecture segment --head');
  with --val-data also eval_curves.png (live validation)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the Bridge / mask head / LoRA on unified-metadata data",
        description="Train Detecture's head (Bridge, dustbin, mask head) and, in stage 2, Qwen LoRA + the <|seg|> "
                    "rows, on frozen Qwen3-VL and SAM3.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path,
                   help="YAML training config (default: with --resume, the run's own OUT/config.json; else the "
                        "built-in defaults = configs/train.yaml)")
    p.add_argument("--data", type=Path, required=True, help="training dataset folder (metadata.json + files)")
    p.add_argument("--val-data", type=Path, help="validation dataset folder (live evaluation, SEG emission rate)")
    p.add_argument("--out", type=Path, required=True, help="run folder: logs, checkpoints, final weights")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from the latest checkpoint in --out, under the run's own config.json "
                        "unless --config is given (--set and --epochs apply on top)")
    p.add_argument("--resume-lr-scale", type=float, metavar="S",
                   help="with --resume: micro-warm-up restart, every group's peak lr x S (published 0.15)")
    p.add_argument("--resume-warmup-epochs", type=float, metavar="E",
                   help="with --resume-lr-scale: warm-up epochs of the restart (published 2; default optim.warmup_epochs)")
    p.add_argument("--init", type=Path, metavar="HEAD",
                   help="start from a trained or converted head folder (head + adapter) and train under its "
                        "inference contract, e.g. checkpoints/detecture-neurips2026 (fine-tuning)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny random backbones (offline smoke runs and tests); refused with --qwen, --sam3, a --set "
                        f"of {', '.join(TINY_IGNORES)} or a quantization or attention kernel of the config file, which "
                        "they do not read")
    add_qwen(p, "to train on, as --set model.qwen=ID; default: the config's model.qwen")
    add_sam3(p, "to train on, as --set model.sam3=ID; default: the config's model.sam3")
    p.add_argument("--epochs", type=int, help="override optim.epochs (e.g. extend a run when resuming; not below the "
                                              "epochs its checkpoint has trained)")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="stop (with a checkpoint) once the run has taken N optimizer steps in all; resumed at or "
                        "past N, it trains none")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, YAML value syntax, e.g. --set optim.lr=5e-5 (repeatable)")
    p.set_defaults(func=run)


def parse_overrides(pairs: list[str]) -> dict:
    from ..utils.typed_config import parse_override

    return dict(parse_override(pair) for pair in pairs)


def config_path(args: argparse.Namespace) -> Path | None:
    """The YAML/JSON file the run's settings start from (``None``: the built-in defaults): ``--config`` if given,
    else, on ``--resume``, the run's own record of its settings, so a resume continues the run as it was configured
    (its ``--set`` values included) rather than under defaults that its checkpoint may refuse."""
    from ..training.loop import RUN_CONFIG

    if args.config is not None:
        return args.config
    if args.resume and (args.out / RUN_CONFIG).is_file():
        return args.out / RUN_CONFIG
    return None


def ignored_by_tiny(args: argparse.Namespace, overrides: dict, model: Any, config: Path | None) -> list[str]:
    """What sets a key of :data:`TINY_IGNORES`, as typed: ``--qwen``, ``--sam3`` or ``--set KEY=``, and a quantization
    or attention kernel the config file (``config``, read as ``model``) names. Its Qwen and SAM3 are not refused:
    configs/train.yaml names them for every run, tiny or not, while it leaves the other two null."""
    options = []
    for key in TINY_IGNORES:
        if key in overrides:
            dest = OWN_OPTIONS.get(key)
            options.append(f"--{dest}" if dest is not None and getattr(args, dest) is not None else f"--set {key}")
        elif key not in OWN_OPTIONS and getattr(model, key.split(".", 1)[1]) is not None:
            options.append(f"{key} of {config}")
    return options


def tiny_source(args: argparse.Namespace, overrides: dict, config: Path | None) -> str:
    """What asked for tiny backbones, as a refusal names it: ``--tiny``, ``--set model.tiny``, or the config file
    (a --resume reads the run's own config.json)."""
    if args.tiny:
        return "--tiny"
    return "--set model.tiny" if "model.tiny" in overrides else f"model.tiny of {config}"


def run(args: argparse.Namespace) -> int:
    from ..bridge.head import read_head_config
    from ..errors import InputError
    from ..training.config import load_config
    from ..training.loop import RUN_CONFIG, ResumeOptions, Trainer, check_resume
    from ..utils.paths import InputSet, require_dir, resolved

    for option, value, low in (("--max-steps", args.max_steps, 1), ("--epochs", args.epochs, 1),
                               ("--resume-warmup-epochs", args.resume_warmup_epochs, 0)):
        if value is not None and value < low:
            raise InputError(f"{option} must be at least {low}, got {value}")
    if args.resume_lr_scale is not None and args.resume_lr_scale <= 0:
        raise InputError(f"--resume-lr-scale must be positive, got {args.resume_lr_scale}")
    overrides = parse_overrides(args.set)
    options = {}  # config key -> the option that set it, as given (named in an error about its value)
    # --epochs overrides a --set optim.epochs: extending a run is its purpose, by re-running the same command line
    # with --resume --epochs N; the model options name what --set names, so two different values are refused
    for key, value, option, overrides_set in (("model.tiny", args.tiny or None, "--tiny", False),
                                              ("optim.epochs", args.epochs, f"--epochs {args.epochs}", True),
                                              ("model.qwen", args.qwen, f"--qwen {args.qwen}", False),
                                              ("model.sam3", args.sam3, f"--sam3 {args.sam3}", False)):
        if value is None:
            continue
        if not overrides_set and key in overrides:
            typed = next(pair for pair in reversed(args.set) if parse_overrides([pair]).keys() == {key})
            refuse_two_values(key, (option, value), (f"--set {typed}", overrides[key]))
        overrides[key], options[key] = value, option
    config = config_path(args)
    on_top = ", ".join(options.get(key, f"--set {key}") for key in overrides)
    logger.info("training config: %s%s", config or "built-in defaults", f", with {on_top} on top" if on_top else "")
    cfg = load_config(config, overrides, options)
    if cfg.model.tiny:
        refuse_with_tiny(ignored_by_tiny(args, overrides, cfg.model, config), tiny_source(args, overrides, config))
    require_dir(args.data, "training dataset")
    if args.val_data is not None:
        require_dir(args.val_data, "validation dataset")
    if args.init is not None:
        cfg.check_init_head(read_head_config(args.init), args.init)
    # --resume may read the run's own record of its settings (a refused change points there); it is rewritten with
    # the values it holds, so no input of the user's is replaced
    own = args.resume and config is not None and resolved(config) == resolved(args.out / RUN_CONFIG)
    InputSet([args.data, args.val_data, None if own else config, args.init]).check_output_dir(args.out)
    resume = ResumeOptions(args.resume, args.resume_lr_scale, args.resume_warmup_epochs)
    check_resume(args.out, resume, cfg)
    trainer = Trainer.from_config(cfg, args.data, args.out, val_data=args.val_data, max_steps=args.max_steps,
                                  init=args.init)
    result = trainer.run(resume)
    if trainer.main:
        print(f"trained {result.steps_run} optimizer steps ({result.steps} in all, {result.epochs_done} epochs done); "
              f"non-finite steps skipped: {result.skipped_steps}; bad samples skipped: {result.skipped_samples}")
        if result.final_dir is not None:
            print(f"final head + adapter: {result.final_dir}")
    return OK  # samples the up-front scan skips are filtered data (see exit_status), each one logged
