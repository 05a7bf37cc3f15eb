"""``detecture segment``: find the texture regions of images and write an overlay PNG + JSON per image."""

from __future__ import annotations

import argparse
import glob
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DetectureError, InputError, ModelAccessError
from .exit_status import for_failures
from .help_format import DefaultsHelpFormatter

if TYPE_CHECKING:
    from ..prompts import Regime
    from ..utils.paths import InputSet

logger = logging.getLogger(__name__)

TINY_NOTE = "tiny random backbones: this output is meaningless (it only shows the pipeline runs)"
OFFLINE_HINT = "to segment without models, use --method classical (CPU, no weights)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images into texture regions (with descriptions)",
        description="Find the texture regions of each image, or the one matching --query. Writes, per image, "
                    "<name>.detecture.png (coloured regions + legend) and <name>.detecture.json (descriptions, areas, "
                    "RLE masks); an input is never overwritten.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", help="image files, folders (their images, sorted) or glob patterns")
    p.add_argument("--method", choices=("detecture", "classical"), default="detecture",
                   help="detecture: Qwen3-VL + SAM3 (weights, GPU advised); classical: Gabor + k-means on CPU, no "
                        "weights (regions and measured descriptions; no --query)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes for --method classical (default: all CPU cores)")
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
    p.add_argument("--show-contract", action="store_true",
                   help="print the inference contract the head is run under (prompts, positions, image, ...)")
    p.set_defaults(func=run)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def gather_images(paths: list[str]) -> tuple[list[Path], int]:
    """Expand files, folders and glob patterns into the images to segment, and count the non-images skipped.

    A file named explicitly is always kept (if it is not a readable image, its own error line says so); inside a
    folder or a glob only files with one of the project's image suffixes are taken, sorted, and the rest are counted
    (Pillow's own list also names save-only formats such as PDF, which would each fail as a "corrupt image").
    Folders are not searched recursively, so an output folder inside an input folder is never read back.
    """
    from ..data.layouts import IMAGE_SUFFIXES

    images: list[Path] = []
    skipped = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file())
        elif not path.exists() and glob.has_magic(raw):
            candidates = sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file())
            if not candidates:
                raise InputError(f"{raw}: no file matches this pattern")
        else:
            images.append(path)
            continue
        kept = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += len(candidates) - len(kept)
        images.extend(kept)
    if not images:
        raise InputError(f"no images found in {', '.join(paths)} ({skipped} non-image file(s) skipped)")
    return images, skipped


def check_inputs(args: argparse.Namespace, regime: "Regime") -> tuple[list[Path], int, "InputSet"]:
    """Everything checkable without a model: options, image paths, the head folder, the output folder."""
    from ..bridge.head import read_head_config
    from ..utils.paths import InputSet, require_file

    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    if args.method == "classical" and regime.kind == "query":
        raise InputError("--query needs --method detecture: the classical segmenter finds regions, it cannot read "
                         "a phrase")
    images, skipped = gather_images(args.images)
    for path in images:
        require_file(path, "image")
    if args.head is not None:
        read_head_config(args.head)
    inputs = InputSet([*images, args.head])
    inputs.check_output_dir(args.out)
    return images, skipped, inputs


def run(args: argparse.Namespace) -> int:
    from ..prompts import Regime

    regime = Regime.query(args.query) if args.query is not None else Regime.parse(args.k)
    images, skipped, inputs = check_inputs(args, regime)
    if args.method == "classical":
        from .segment_classical import run_classical

        rows, failures = run_classical(images, regime, args.out, args.workers or _cpu_count(), inputs)
    else:
        rows, failures = _run_detecture(args, images, regime, inputs)
    return _summarise(rows, failures, skipped, args.out)


def _summarise(rows: list[dict], failures: list[tuple[Path, str]], skipped: int, out: Path) -> int:
    from .segment_output import print_table

    print_table(rows)
    for path, message in failures:
        print(f"error: {message}" if str(path) in message else f"error: {path}: {message}")
    extra = f", {skipped} non-image file(s) skipped" if skipped else ""
    print(f"{len(rows)} image(s) segmented, {len(failures)} failed{extra}; outputs in {out}")
    return for_failures(len(failures))


def _load_pipeline(args: argparse.Namespace):
    """Load the VLM pipeline; a failure names the offline method, which needs none of what just failed."""
    import torch

    from ..pipeline import DetecturePipeline

    if args.tiny:
        logger.warning(TINY_NOTE)
        return DetecturePipeline.tiny(head=args.head)
    try:
        return DetecturePipeline.from_pretrained(
            args.qwen, args.sam3, args.head, device=args.device, dtype=args.dtype, quantization=args.quantization,
            trust_remote_code=args.trust_remote_code, max_new_tokens=args.max_new_tokens)
    except ModelAccessError as exc:
        raise ModelAccessError(f"{exc}; {OFFLINE_HINT}") from None
    except torch.OutOfMemoryError:
        raise ModelAccessError("not enough memory to load Qwen3-VL + SAM3 (try --quantization 4bit, a smaller "
                               f"--qwen, or another --device); {OFFLINE_HINT}") from None


def _run_detecture(args: argparse.Namespace, images: list[Path], regime: "Regime",
                   inputs: "InputSet") -> tuple[list[dict], list]:
    from tqdm import tqdm

    from ..images import as_rgb_array, load_image
    from .segment_output import forced_tiny_responses, plan_outputs, write_outputs

    grounding = args.grounding if args.grounding != "auto" else ("bridge" if args.head or args.tiny else "text")
    pipe = _load_pipeline(args)
    if args.show_contract:
        print(f"inference contract ({'head ' + str(args.head) if args.head else 'no head: defaults'}):")
        print(pipe.contract.summary())
    args.out.mkdir(parents=True, exist_ok=True)
    # Paired by position, not keyed by path: an image named twice gets two outputs, as with --method classical.
    planned = list(zip(images, plan_outputs(args.out, images, inputs)))
    rows, failures = [], []
    progress = tqdm(total=len(images), desc="segment", unit="img")
    for start in range(0, len(planned), args.batch_size):
        loaded = []
        for path, stem in planned[start:start + args.batch_size]:
            try:
                loaded.append((path, stem, as_rgb_array(load_image(path))))
            except DetectureError as exc:
                failures.append((path, str(exc)))
                progress.update(1)
        if not loaded:
            continue
        forced = forced_tiny_responses(regime, len(loaded)) if args.tiny else None
        try:
            results = pipe.segment([im for _, _, im in loaded], regime, grounding, forced)
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory on one batch: record it, go on
            failures.extend((path, f"segmentation failed: {exc}") for path, _, _ in loaded)
            progress.update(len(loaded))
            continue
        for (path, stem, image), result in zip(loaded, results):
            rows.append(write_outputs(stem, path, image, result, regime,
                                      note=TINY_NOTE if args.tiny else None))
            progress.update(1)
    progress.close()
    return rows, failures
