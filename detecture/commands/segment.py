"""``detecture segment``: find the texture regions of images and write an overlay PNG + JSON per image."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DetectureError
from .exit_status import for_failures
from .help_format import DefaultsHelpFormatter

if TYPE_CHECKING:
    from ..utils.paths import InputSet

logger = logging.getLogger(__name__)

TINY_NOTE = "tiny random backbones: this output is meaningless (it only shows the pipeline runs)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images into texture regions (with descriptions)",
        description="Find the texture regions of each image, or the one matching --query. Writes, per image, "
                    "<name>.detecture.png (coloured regions + legend) and <name>.detecture.json (descriptions, areas, "
                    "RLE masks); an input is never overwritten.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", type=Path, help="image files (any format Pillow reads)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--k", default="auto", help="number of regions: 'auto' (1 to 6) or exactly 1..6")
    which.add_argument("--query", help="find the one region matching this phrase, e.g. 'the rough bark'")
    p.add_argument("--grounding", choices=("auto", "bridge", "text"), default="auto",
                   help="bridge: trained head grounds the <|seg|> states; text: SAM3's text encoder grounds each "
                        "description (no training needed); auto: bridge when --head is given, else text")
    p.add_argument("--head", type=Path, help="trained head checkpoint folder (from 'detecture train')")
    p.add_argument("--qwen", default="Qwen/Qwen3-VL-8B-Instruct", help="Qwen3-VL hub id or local folder")
    p.add_argument("--sam3", default="facebook/sam3", help="SAM3 hub id or local folder (gated: needs a token)")
    p.add_argument("--out", type=Path, default=Path("detecture_out"), help="output folder")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda if available)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--quantization", choices=("4bit", "8bit"), help="load Qwen quantized (bitsandbytes, GPU)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    p.add_argument("--max-new-tokens", type=int, default=300, help="generation budget per image")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")
    p.add_argument("--tiny", action="store_true",
                   help="use tiny random backbones (offline, any machine); output is meaningless")
    p.set_defaults(func=run)


def check_inputs(args: argparse.Namespace) -> "InputSet":
    """Everything checkable without a model: options, image paths, the head folder, the output folder."""
    from ..bridge.head import read_head_config
    from ..errors import InputError
    from ..utils.paths import InputSet, require_file

    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    for path in args.images:
        require_file(path, "image")
    if args.head is not None:
        read_head_config(args.head)
    inputs = InputSet([*args.images, args.head])
    inputs.check_output_dir(args.out)
    return inputs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..images import as_rgb_array, load_image
    from ..pipeline import DetecturePipeline
    from ..prompts import Regime
    from .segment_output import forced_tiny_responses, print_table, write_outputs

    regime = Regime.query(args.query) if args.query is not None else Regime.parse(args.k)
    inputs = check_inputs(args)
    grounding = args.grounding if args.grounding != "auto" else ("bridge" if args.head or args.tiny else "text")
    if args.tiny:
        logger.warning(TINY_NOTE)
        pipe = DetecturePipeline.tiny(head=args.head)
    else:
        pipe = DetecturePipeline.from_pretrained(
            args.qwen, args.sam3, args.head, device=args.device, dtype=args.dtype, quantization=args.quantization,
            trust_remote_code=args.trust_remote_code, max_new_tokens=args.max_new_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    progress = tqdm(total=len(args.images), desc="segment", unit="img")
    for start in range(0, len(args.images), args.batch_size):
        batch_paths = args.images[start:start + args.batch_size]
        loaded = []
        for path in batch_paths:
            try:
                loaded.append((path, as_rgb_array(load_image(path))))
            except DetectureError as exc:
                failures.append((path, str(exc)))
                progress.update(1)
        if not loaded:
            continue
        forced = forced_tiny_responses(regime, len(loaded)) if args.tiny else None
        try:
            results = pipe.segment([im for _, im in loaded], regime, grounding, forced)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory on one batch: record it, go on
            failures.extend((path, f"segmentation failed: {exc}") for path, _ in loaded)
            progress.update(len(loaded))
            continue
        for (path, image), result in zip(loaded, results):
            rows.append(write_outputs(args.out, path, image, result, regime, note=TINY_NOTE if args.tiny else None,
                                      inputs=inputs))
            progress.update(1)
    progress.close()
    print_table(rows)
    for path, message in failures:
        print(f"error: {message}" if str(path) in message else f"error: {path}: {message}")
    print(f"{len(rows)} image(s) segmented, {len(failures)} failed; outputs in {args.out}")
    return for_failures(len(failures))
