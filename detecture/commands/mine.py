"""``detecture mine``: turn a semantic-segmentation dataset into a multi-texture training set (logic in miner/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .exit_status import OK
from .model_options import add_qwen
from .unserved import refuse_unserved

EPILOG = """\
examples:
  detecture mine --source ade20k --root data/ADEChallengeData2016 --out datasets/mined
  detecture mine --source ade20k --root data/ADEChallengeData2016 --textured-root data/ADE20K_0.3 \\
      --textured-root data/ADE20K_textured_images --degrees 0.1,0.3,1.0 --out datasets/mined --describer qwen

A killed run resumes where it stopped when re-run with the same arguments. Output: <out>/metadata.json
(+ metadata_train.json / metadata_val.json), images/, masks/, rejected.jsonl, summary.json,
score_histogram.png, review/contact_sheet.html, and with --arrow a HuggingFace dataset in hf_dataset/.
"""

# Literal copies (checked against the registries by the tests) so that `detecture --help` imports no numpy.
SOURCE_NAMES = ("ade20k", "folder")
DESCRIBER_NAMES = ("template", "qwen")
# The options that serve one describer only: refused for the other rather than ignored.
DESCRIBER_OPTIONS = {"qwen": "qwen", "device": "qwen"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mine",
        help="build a multi-texture training set from ADE20K / Textured-ADE20K",
        description="Score every scene of a semantic-segmentation dataset from its label map, keep the clean "
        "multi-texture ones, merge their texture classes into 2-5 region masks, describe each region, and write "
        "the unified metadata format (docs/ARCHITECTURE.md, Data) with a train/val split by scene.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", choices=SOURCE_NAMES, default="ade20k", help="dataset layout (default: ade20k)")
    p.add_argument("--root", type=Path, required=True, help="dataset root, e.g. .../ADEChallengeData2016")
    p.add_argument("--out", type=Path, required=True, help="output dataset folder (created; resumable)")
    p.add_argument("--textured-root", type=Path, action="append", default=[],
                   help="Textured-ADE20K folder: TextureSAM's flat release (<scene>_textured_degree0_3.jpg ...) or "
                   "<root>/<degree>/images/...; adds one sample per degree to every kept scene. Repeat to merge "
                   "folders (the first one given wins on duplicates)")
    p.add_argument("--degrees", help="texture strengths to use, e.g. 0.1,0.3,1.0 (default: all found)")
    p.add_argument("--textured-mapping", type=Path, metavar="FILE",
                   help='JSON {"<file name>": {"base_ade20k_id": ..., "degree": ...}} naming the scene and strength '
                   "of flat files")
    p.add_argument("--subset", default="training", help="ADE20K subset folder (default: training)")
    p.add_argument("--describer", choices=DESCRIBER_NAMES, default="template",
                   help="region describer: template (offline, no model) or qwen (local Qwen3-VL; default: template)")
    add_qwen(p, "of the qwen describer; default: the config's describer.qwen_model")
    p.add_argument("--device", help="device for the qwen describer (default: cuda if available)")
    p.add_argument("--workers", type=int, help="parallel processes (default: all CPU cores, shared by the processes "
                                               "of an 'accelerate launch'; qwen uses 1)")
    p.add_argument("--shard", metavar="I/N",
                   help="mine only share I of N of the scenes and write no metadata (one job-array task each); "
                        "then run the same command without --shard: it finds every scene done and writes the merged "
                        "dataset")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val split and the review sample (default: 0)")
    p.add_argument("--limit", type=int, help="mine only the first N scenes (sorted by name)")
    p.add_argument("--threshold", type=float, help="keep scenes scoring at least this (default: from the config, 65)")
    p.add_argument("--config", type=Path,
                   help="miner config (default: detecture/miner/miner.yaml in the package; configs/miner.yaml is an "
                        "identical copy to edit)")
    p.add_argument("--vocabulary", type=Path,
                   help="class vocabulary YAML (default: detecture/miner/ade20k_classes.yaml in the package)")
    p.add_argument("--arrow", action="store_true", help="also save a HuggingFace datasets copy in <out>/hf_dataset")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="also push that dataset to the Hub (off by default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..miner.review import format_summary
    from ..miner.orchestrate import MergeLeft, MineOptions, mine
    from ..miner.textured import parse_degrees
    from ..utils.parallel import Shard

    refuse_unserved(args, DESCRIBER_OPTIONS, "describer", args.describer)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    summary = mine(MineOptions(
        source=args.source, root=args.root, out=args.out, subset=args.subset, textured_roots=tuple(args.textured_root),
        degrees=parse_degrees(args.degrees) if args.degrees is not None else None, textured_mapping=args.textured_mapping,
        describer=args.describer, workers=args.workers, seed=args.seed, limit=args.limit, config=args.config,
        vocabulary=args.vocabulary, threshold=args.threshold, qwen=args.qwen, device=args.device, arrow=args.arrow,
        push_to_hub=args.push_to_hub, shard=Shard.parse(args.shard),
    ))
    if isinstance(summary, MergeLeft):  # scenes held by live runs that do not merge raised RunStopped (status 3)
        print(f"mined into {args.out}; another run into it (process {summary.pid} on {summary.host}) is still mining "
              f"{summary.scenes} scene(s) and writes the merged dataset when it finishes")
        return OK
    if summary is None:
        if args.shard:
            print(f"share {args.shard} mined into {args.out}; once every share is done, run the same command "
                  "without --shard to write the merged dataset")
        return OK
    print(format_summary(summary))
    print(f"\nwrote {args.out / 'metadata.json'}")
    # Rejections are the miner's job (listed in rejected.jsonl), not failures: see exit_status.
    print(f"{summary['samples']} sample(s) kept, {summary['rejected_samples']} rejected (reasons in "
          f"{args.out / 'rejected.jsonl'})")
    return OK
