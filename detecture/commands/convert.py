"""``detecture convert published best.pt --out DIR``: import the published checkpoint as a Detecture head folder;
``detecture convert sam3 sam3.pt --out DIR``: Meta's SAM3 checkpoint as a ``Sam3Model`` folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from .help_format import DefaultsHelpFormatter
from .model_options import add_qwen, fold_qwen
from .unserved import refuse_unserved

QWEN_ALIASES = ("--base",)  # the older spelling of --qwen

# The layout each layout-specific option belongs to: the other layout refuses it rather than ignore it.
LAYOUT_OF_OPTION = {"qwen": "published", "base": "published", "bpe": "sam3", "tokenizer": "sam3"}

EPILOG = """\
examples:
  hf download anon-detecture-neurips-2026/Detecture-NeurIPS best.pt --local-dir .
  detecture convert published best.pt --out checkpoints/detecture-neurips2026
  detecture convert published best.pt --out checkpoints/detecture-neurips2026 --qwen Qwen/Qwen3-VL-8B-Instruct
                                 (also measure how much weight decay shrank the frozen embedding rows)
The folder holds config.json (with the published inference contract), model.safetensors (head) and adapter/
(LoRA + <|seg|> rows, a PEFT adapter); use it with 'detecture segment --head' or 'detecture bench --head'.

  hf download facebook/sam3 sam3.pt --local-dir .
  detecture convert sam3 sam3.pt --out checkpoints/sam3-meta --bpe bpe_simple_vocab_16e6.txt.gz
                                 (Meta's own SAM3 weights as a Sam3Model folder, for --sam3 checkpoints/sam3-meta)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="import the published checkpoint (best.pt) as a head folder, or Meta's sam3.pt as a SAM3 folder",
        description="Convert a checkpoint of another layout: 'published' into a Detecture head folder + PEFT "
                    "adapter, 'sam3' (Meta's SAM3 checkpoint) into a Sam3Model folder for --sam3. The file is read "
                    "with torch.load(weights_only=True, mmap=True): nothing in it is executed and the 7.5 GB "
                    "published file is never loaded whole.",
        epilog=EPILOG, formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("layout", choices=("published", "sam3"),
                   help="layout of the input: 'published' (NeurIPS 2026 best.pt) or 'sam3' (Meta's sam3.pt)")
    p.add_argument("checkpoint", type=Path, help="the input file (never modified)")
    p.add_argument("--out", type=Path, required=True,
                   help="new folder to write (must not exist): a head folder, or a Sam3Model folder for 'sam3'")
    add_qwen(p, "published only: the base model to measure the embedding shrink factor against; recorded in the "
                "contract and applied at inference", aliases=QWEN_ALIASES)
    p.add_argument("--bpe", type=Path,
                   help="sam3 only: CLIP's bpe_simple_vocab_16e6.txt.gz for the tokenizer (default: found in the "
                        "installed sam3 or open_clip_torch package)")
    p.add_argument("--tokenizer", type=Path, help="sam3 only: copy this tokenizer folder instead of building one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_unserved(args, LAYOUT_OF_OPTION, "layout", args.layout)
    fold_qwen(args, QWEN_ALIASES)
    if args.layout == "sam3":
        return run_sam3(args)
    from ..bridge.published import convert

    out, shrink = convert(args.checkpoint, args.out, base=args.qwen)
    print(f"converted {args.checkpoint} -> {out}")
    if shrink is not None:
        print(f"embedding shrink factor (non-<|seg|> rows vs base): {shrink:.6f}; recorded in the contract")
    print(f"use it with: detecture segment IMAGE --head {out}")
    return 0


def run_sam3(args: argparse.Namespace) -> int:
    from ..backbones.sam3_convert import convert

    out, converted = convert(args.checkpoint, args.out, bpe=args.bpe, tokenizer=args.tokenizer)
    print(f"converted {args.checkpoint} -> {out}: {len(converted.state_dict)} tensors "
          f"({len(converted.dropped)} dropped: RoPE tables Sam3Model recomputes and point-prompt projections it lacks; "
          f"{converted.tracker_keys} video-tracker keys skipped)")
    print(f"use it with: detecture segment IMAGE --sam3 {out}")
    return 0
