"""``detecture bench``: score methods on texture-segmentation datasets through one metric code path.

The command only parses options; the work is in :mod:`detecture.benchmark`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .exit_status import OK, for_failures
from ..backbones import DEFAULT_QWEN
from .model_options import MODEL_NAMES, SAM3_DEFAULT, add_qwen, add_sam3
from .two_values import refuse_two_values
from .unserved import refuse_unserved, refuse_with_tiny

EPILOG = """\
datasets: names of folders under the datasets root (case-insensitive: rwtd, stld, ade20k_detecture, caid, outex)
or paths. A folder holds metadata.json (unified format) or RWTD's images/ + textures_mask/ layout.

methods: classical (CPU, no weights), detecture, detecture-text, sam3, grounding-sam3, texturesam, sa2va.
Precomputed label maps: --predictions NAME=FOLDER (file names from --predictions-pattern).

examples:
  detecture bench --datasets rwtd,outex --methods classical,detecture-text --out runs/bench
  detecture bench --datasets /data/outex --methods classical \\
      --predictions pca-ms=/data/outex/peer_predictions/pca-ms --predictions-pattern 'seg{stem}.png' --out runs/outex
  detecture bench --datasets outex,dtd --methods classical --workers 8 --out runs/cpu
      (8 worker processes score the classical method's samples, one CPU core each)
  accelerate launch -m detecture bench --datasets rwtd --methods detecture --head ckpt/ --out runs/bench
      (one shard of the samples per GPU process; results merged)
  detecture bench --datasets rwtd --methods detecture --head ckpt/ --protocol published --out runs/paper
      (scored by the paper's evaluator, for comparison with its table)
"""


def _methods_reading(key: str) -> str:
    """The methods that read the model of ``key`` (benchmark.model_keys), as help words them."""
    from ..benchmark.model_keys import readers

    names = readers(key)
    return f"{_listed(names)} method{'s' if len(names) > 1 else ''}"


def _listed(names: Sequence[str]) -> str:
    """``a, b and c``, as help words a list of methods."""
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..benchmark.model_keys import TINY_METHODS

    p = subparsers.add_parser(
        "bench",
        help="benchmark methods on texture-segmentation datasets",
        description="Score methods × datasets (mIoU, panoptic IoU, ARI, boundary F, K accuracy with 95 % CIs). "
        "Each cell is resumable: re-running continues where a killed run stopped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--datasets", type=_csv, default=["rwtd", "stld", "ade20k_detecture", "caid"],
                   help="comma-separated dataset names or paths (default: rwtd,stld,ade20k_detecture,caid)")
    p.add_argument("--methods", type=_csv, default=["classical"], help="comma-separated methods (default: classical)")
    p.add_argument("--out", type=Path, required=True, help="output folder (results, reports, charts, galleries)")
    p.add_argument("--data-root", help="datasets root (default: $DETECTURE_DATASETS_ROOT, else ./datasets)")
    p.add_argument("--limit", type=int, help="only the first N samples of each dataset")
    p.add_argument("--force", action="store_true",
                   help="delete and redo the results of the selected cells, also of complete ones; with --limit only "
                        "those of the first N samples (the cell's others are kept, unless its settings changed)")
    p.add_argument("--retry-failed", action="store_true",
                   help="rerun samples recorded as failed (e.g. after fixing a file or freeing GPU memory)")
    p.add_argument("--regime", help="K regime for every dataset: autonomous (or auto, as segment --k) | oracle "
                   "(each sample's K_gt) | oracle:N (or N: every sample announced N regions) (default: the dataset's "
                   "protocol from the regime table, else oracle with each sample's K_gt)")
    p.add_argument("--predictions", type=_key_value, action="append", default=[], metavar="NAME=FOLDER",
                   help="score precomputed label maps from FOLDER as method NAME (repeatable)")
    p.add_argument("--predictions-pattern",
                   help="file name of a prediction; {id} = record id, {stem} = image file stem (default: {stem}.png)")
    add_qwen(p, f"of the {_methods_reading('qwen')}; default: {DEFAULT_QWEN}, or for detecture the one --head "
                "was trained on")
    add_sam3(p, f"of the {_methods_reading('sam3')}; {SAM3_DEFAULT}")
    p.add_argument("--model", type=_key_value, action="append", default=[], metavar="KEY=ID",
                   help="model id or local path of a peer method: grounding-dino=..., texturesam=..., sa2va=... "
                   "(repeatable; qwen= and sam3= are --qwen and --sam3; an unknown KEY is refused before any model "
                   "loads)")
    p.add_argument("--head", help="trained Detecture checkpoint (Bridge + head) for the 'detecture' method")
    p.add_argument("--prompt", help="text prompt of the single-prompt methods sam3 and grounding-sam3 "
                   "(default: 'texture')")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--tiny", action="store_true",
                   help=f"tiny random backbones on the CPU for {_listed(TINY_METHODS)} (offline plumbing checks; a "
                        "model or --device that only these methods would read is refused with it)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow Sa2VA's custom model code from the hub (required by the 'sa2va' method)")
    p.add_argument("--gallery", type=int, default=4, help="samples per dataset in the gallery PNG (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed for stochastic methods (default: 0)")
    p.add_argument("--classical-config", type=Path, metavar="YAML",
                   help="settings of the classical method: a YAML file of ClassicalParams fields, e.g. 'max_k: 4' "
                        "(a cell scored in --out under other settings is refused: use a new --out, or --force)")
    p.add_argument("--workers", type=int,
                   help="worker processes that score the classical method's samples, one thread each: up to the CPU "
                        "cores (default: 1; under 'accelerate launch', per process). The other methods score in the "
                        "process itself")
    p.add_argument("--shard", metavar="I/N",
                   help="score only share I of N of every cell and write no report (one job-array task each); then "
                        "run the same command without --shard: it finds every sample done, merges and reports")
    p.add_argument("--protocol", choices=("ours", "published"), default="ours",
                   help="scoring: ours (default) or published, the paper's evaluator reproduced exactly, artefacts "
                        "included (1008x1008, last GT mask wins overlaps, empty GT masks counted, NaN border)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..benchmark.methods import check_method_names
    from ..benchmark.methods.base import MethodOptions
    from ..benchmark.model_keys import method_options
    from ..benchmark.methods.predictions import DEFAULT_PATTERN, PredictionsMethod
    from ..benchmark.regimes import parse_regime
    from ..benchmark.suite import ShareOutcome, run as run_bench
    from ..benchmark.runner import BenchConfig
    from ..utils.parallel import Shard

    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    if args.gallery < 0:
        raise InputError("--gallery must be 0 or more")
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    check_method_names(args.methods)
    kinds = args.methods + ([PredictionsMethod.kind] if args.predictions else [])  # those of the run's methods
    # An option that serves some methods only (benchmark.model_keys.READS: --head of 'detecture', --prompt of the
    # prompted methods, --workers of the classical one ...) is refused when none of the run's methods reads it; a
    # --model key none reads is refused by benchmark.methods.check_model_keys.
    refuse_unserved(args, method_options(), "method", kinds)
    models = models_of(args)
    if args.tiny:
        refuse_with_tiny(ignored_by_tiny(args, models))
    classical_params = None
    if args.classical_config is not None:
        from ..classical import load_params

        classical_params = load_params(args.classical_config)
    config = BenchConfig(
        out=args.out,
        methods=args.methods,
        datasets=args.datasets,
        predictions=args.predictions,
        predictions_pattern=args.predictions_pattern or DEFAULT_PATTERN,
        data_root=args.data_root,
        limit=args.limit,
        force=args.force,
        retry_failed=args.retry_failed,
        regime=parse_regime(args.regime) if args.regime else None,
        gallery=args.gallery,
        shard=Shard.parse(args.shard),
        workers=args.workers or 1,
        protocol=args.protocol,
        options=MethodOptions(device=args.device, tiny=args.tiny, trust_remote_code=args.trust_remote_code,
                              models=models, head=args.head, prompt=args.prompt,
                              seed=args.seed, classical_params=classical_params),
    )
    outcome = run_bench(config)
    if outcome is None:  # a launched process other than the main one: the main one reports
        return OK
    if isinstance(outcome, ShareOutcome):
        tally, status = _tally(outcome.requested, outcome.ok, outcome.failed)
        print(f"share {args.shard} scored into {args.out}: {tally}; once every share is done, run the same command "
              "without --shard to merge and report")
        return status
    print(outcome.files["markdown"].read_text(encoding="utf-8"), end="")
    tally, status = _tally(sum(s.requested for s in outcome.summaries), sum(s.ok for s in outcome.summaries),
                           sum(s.failed for s in outcome.summaries))
    print(f"reports: {args.out}")
    print(tally)
    return status


def models_of(args: argparse.Namespace) -> dict[str, str]:
    """The ``--model`` ids, with ``--qwen`` and ``--sam3`` under their keys (the names every command gives those
    models; ``--model qwen=`` and ``sam3=`` stay accepted). A model named both ways differently is refused
    (:func:`~detecture.commands.two_values.refuse_two_values`)."""
    from ..benchmark.methods import OWN_OPTIONS

    models = dict(args.model)
    for key, option in OWN_OPTIONS.items():
        value = getattr(args, key)
        if value is None:
            continue
        if key in models:
            refuse_two_values(MODEL_NAMES[key], (f"{option} {value}", value),
                              (f"--model {key}={models[key]}", models[key]))
        models[key] = value
    return models


def ignored_by_tiny(args: argparse.Namespace, models: dict[str, str]) -> list[str]:
    """The options, as typed, that --tiny leaves unread: a model (``--qwen``, ``--model qwen=``, ...) or ``--device``
    whose every reader among the selected methods runs tiny random backbones instead
    (:func:`~detecture.benchmark.model_keys.tiny_leaves_unread`). One that another selected method still reads
    (``--sam3`` with ``grounding-sam3``) is kept; ``--head``, ``--prompt`` and ``--seed`` shape the tiny runs too."""
    from ..benchmark.methods import OWN_OPTIONS
    from ..benchmark.model_keys import tiny_leaves_unread

    typed = dict(args.model)
    options = []
    for key in models:
        if not tiny_leaves_unread(key, args.methods):
            continue
        if key in OWN_OPTIONS and getattr(args, key) is not None:
            options.append(OWN_OPTIONS[key])
        if key in typed:
            options.append(f"--model {key}")
    if args.device is not None and tiny_leaves_unread(None, args.methods):
        options.append("--device")
    return options


def _tally(requested: int, ok: int, failed: int) -> tuple[str, int]:
    """The closing line and exit status of a run: samples without a record (missing: a run of several processes
    that lost one, say) are counted beside the failed ones, never among the scored, and either makes the run
    partial; a re-run scores the missing ones."""
    missing = requested - ok - failed
    line = f"{ok} of {requested} sample(s) scored, {failed} failed" + (f", {missing} missing" if missing else "")
    return line, for_failures(failed + missing)
