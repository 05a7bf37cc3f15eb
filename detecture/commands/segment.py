"""``detecture segment``: find the texture regions of images and write an overlay PNG + JSON per image."""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..backbones import DEFAULT_MAX_NEW_TOKENS
from ..errors import DetectureError, InputError
from ..utils.parallel import is_environment_error, stopped
from .exit_status import for_failures
from .help_format import DefaultsHelpFormatter
from .model_options import add_quantization, add_qwen, add_sam3
from .unserved import given_options, refuse_unserved, refuse_with_tiny

if TYPE_CHECKING:
    from ..output import Claims, OutputFolder
    from ..service import SegmentRequest
    from ..utils.parallel import Ranks
    from ..utils.paths import InputSet

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  detecture segment textures.png --method classical --k 3 --out results/      (CPU, no weights)
  detecture segment photos/ --method classical --workers 4 --out results/     (a folder, 4 processes)
  detecture segment photos/ --method classical --classical-config classical.yaml --out results/
      (classical.yaml holds ClassicalParams fields, e.g. 'max_k: 4' and 'position_weight: 0.3')
  detecture segment bark.jpg --query "the rough bark" --out results/          (Qwen3-VL + SAM3 from the hub)
  detecture segment 'shots/*.jpg' --head checkpoints/my-head --quantization 4bit --out results/
  accelerate launch --multi_gpu --num_processes 8 -m detecture segment photos/ --out results/
      (one share of the images per GPU)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment images into texture regions (with descriptions)",
        description="Find the texture regions of each image, or the one matching --query. Writes, per image, "
                    "<name>.detecture.png (coloured regions + legend) and <name>.detecture.json (descriptions, areas, "
                    "RLE masks); an input is never overwritten. A re-run into the same --out skips images whose outputs "
                    "are complete for the same input and settings (--force redoes them); under 'accelerate launch' "
                    "or with --shard each process takes its own share of the images.",
        epilog=EPILOG, formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+",
                   help="image files, folders (their images, sorted) or glob patterns; a file reached more than once "
                        "is segmented once; folders and patterns skip an earlier run's overlays (x.detecture.png beside "
                        "its x.detecture.json)")
    p.add_argument("--method", choices=("detecture", "classical"), default="detecture",
                   help="detecture: Qwen3-VL + SAM3 (weights, GPU advised); classical: Gabor + k-means on CPU, no "
                        "weights (regions and measured descriptions; no --query)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel processes for --method classical (default: the CPU cores, shared by the processes "
                        "of an 'accelerate launch')")
    p.add_argument("--classical-config", type=Path, metavar="YAML",
                   help="settings of --method classical: a YAML file of ClassicalParams fields, e.g. 'max_k: 4' "
                        "(the rest keep their tuned defaults; see detecture.classical.ClassicalParams)")
    p.add_argument("--force", action="store_true",
                   help="redo images whose outputs in --out are complete for the same input and settings (skipped "
                        "by default)")
    p.add_argument("--shard", metavar="I/N",
                   help="segment only share I of N of the images (e.g. one job-array task each; shares are disjoint "
                        "and together cover all images)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--k", default="auto", help="number of regions: 'auto' (1 to 6) or exactly 1..6")
    which.add_argument("--query", help="find the one region matching this phrase, e.g. 'the rough bark'")
    p.add_argument("--grounding", choices=("auto", "bridge", "text"),
                   help="bridge: trained head grounds the <|seg|> states; text: SAM3's text encoder grounds each "
                        "description (no training needed); auto (the default): bridge when --head or --tiny is given "
                        "(tiny backbones carry a random head), else text")
    p.add_argument("--head", type=Path, help="trained head checkpoint folder (from 'detecture train')")
    # Model options default to None ("not given"): the service fills in the defaults, and one given to the classical
    # method is refused rather than ignored (method_options).
    add_qwen(p)
    add_sam3(p)
    p.add_argument("--out", type=Path, default=Path("detecture_out"),
                   help="output folder (made if missing, and removed again if the run writes nothing into it)")
    p.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda if available)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on GPU, fp32 on CPU")
    add_quantization(p)
    p.add_argument("--batch-size", type=int, help="images per forward pass of --method detecture (default: 1)")
    p.add_argument("--max-new-tokens", type=int,
                   help=f"generation budget per image (default: {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code")
    p.add_argument("--tiny", action="store_true",
                   help="use tiny random backbones on the CPU (offline, any machine); output is meaningless. The "
                        "options that name or load the real models (--qwen, --device, ...) are refused with it")
    p.add_argument("--show-contract", action="store_true",
                   help="print the inference contract the head is run under (prompts, positions, image, ...)")
    p.set_defaults(func=run)


@dataclass
class Skipped:
    """The files of folders and glob patterns that are not segmented, by reason."""

    non_images: int = 0
    outputs: int = 0  # overlays of an earlier segment run (detecture.output.is_output)

    def __bool__(self) -> bool:
        return bool(self.non_images or self.outputs)

    def __str__(self) -> str:
        parts = [f"{self.non_images} non-image file(s)"] if self.non_images or not self.outputs else []
        if self.outputs:
            parts.append(f"{self.outputs} Detecture output(s)")
        return f"{' and '.join(parts)} skipped"


def gather_images(paths: list[str]) -> tuple[list[Path], Skipped, list[Path]]:
    """Expand files, folders and glob patterns into the images to segment, and count the files skipped.

    A file named explicitly is always kept (if it is not a readable image, its own error line says so); inside a
    folder or a glob only files with one of the project's image suffixes are taken, sorted, and the rest are counted
    (Pillow's own list also names save-only formats such as PDF, which would each fail as a "corrupt image"), as are
    the overlays of an earlier run (``x.detecture.png`` beside its ``x.detecture.json``), which are results, not
    inputs. Folders are not searched recursively, so an output folder inside an input folder is never read back. A
    file reached more than once (named twice, or by a file and a folder or pattern that overlap, or through a
    symbolic link) is segmented once, at its first place: its second output would be a copy under another number.
    Returns the images, the files skipped, and the folders they were gathered from (an output folder must not be
    one).
    """
    from ..data.layouts import IMAGE_SUFFIXES
    from ..output import is_output
    from ..utils.paths import resolved

    images: list[Path] = []
    folders: list[Path] = []
    skipped = Skipped()
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
        readable = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES]
        kept = [p for p in readable if not is_output(p)]
        skipped.non_images += len(candidates) - len(readable)
        skipped.outputs += len(readable) - len(kept)
        images.extend(kept)
        folders.extend(dict.fromkeys([path] if path.is_dir() else [p.parent for p in kept]))
    if not images:
        raise InputError(f"no images found in {', '.join(paths)} ({skipped})")
    unique: dict[Path, Path] = {}
    for path in images:
        unique.setdefault(resolved(path), path)
    if len(unique) < len(images):
        logger.warning("%d image path(s) name a file already given (the same file is segmented once)",
                       len(images) - len(unique))
    return list(unique.values()), skipped, folders


# The command line's own options that serve one method only, by dest (method_options adds the service's).
METHOD_OPTIONS = {"workers": "classical", "batch_size": "detecture", "show_contract": "detecture"}
# A request field -> the option that sets it, where their names differ.
OPTION_OF_FIELD = {"classical_params": "classical_config"}


def method_options(args: argparse.Namespace) -> dict[str, str]:
    """Every option of ``args`` that serves one method only, by dest: the command line's own and those that set the
    service's fields of one method (:data:`detecture.service.METHOD_FIELDS`). The service refuses those too, but by
    their field names; checked here first, a refusal names the options as typed."""
    from ..service import METHOD_FIELDS

    service = {OPTION_OF_FIELD.get(name, name): method for name, method in METHOD_FIELDS.items()}
    return {**METHOD_OPTIONS, **{dest: method for dest, method in service.items() if hasattr(args, dest)}}


def build_request(args: argparse.Namespace) -> "SegmentRequest":
    """The service request the options describe, every option as given; one not given (``None``) is left to the
    service, which fills in the defaults and refuses what cannot run. The options that serve the other method, and
    with --tiny those of the real backbones (:data:`~detecture.service.TINY_IGNORES`), are refused first, by name,
    as are a --k that is no K and a --max-new-tokens under 1."""
    from ..prompts import Regime
    from ..service import TINY_IGNORES, SegmentRequest, check_max_new_tokens

    refuse_unserved(args, method_options(args), "method", args.method)
    Regime.from_k(args.k, "--k")  # the service would refuse these too, but by their field names
    check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    if args.tiny:
        refuse_with_tiny(given_options(args, TINY_IGNORES))
    given = dict(k=args.k, query=args.query, grounding=args.grounding, classical_params=args.classical_config,
                 head=args.head, qwen=args.qwen, sam3=args.sam3, device=args.device, dtype=args.dtype,
                 quantization=args.quantization, trust_remote_code=args.trust_remote_code,
                 max_new_tokens=args.max_new_tokens, tiny=args.tiny)
    return SegmentRequest(method=args.method, **{name: value for name, value in given.items() if value is not None})


def check_inputs(args: argparse.Namespace, request: "SegmentRequest") -> tuple[list[Path], Skipped, "InputSet"]:
    """Everything checkable without a model: options, image paths, the head folder and what the request asks of
    it, the output folder."""
    from ..service import check_before_loading
    from ..utils.paths import InputSet, require_file

    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers must be at least 1")
    images, skipped, folders = gather_images(args.images)
    for path in images:
        require_file(path, "image")
    check_before_loading(request)  # reads the head's config
    inputs = InputSet([*images, args.head, args.classical_config])
    # `segment rx --out rx` would read its overlays back next time; `--out rx/seg` is never read (not recursive)
    InputSet(folders, flat=True).check_output_dir(args.out)
    inputs.check_output_dir(args.out, names_avoid_inputs=True)  # OutputFolder numbers names around inputs
    return images, skipped, inputs


def settings_of(request: "SegmentRequest") -> dict:
    """The options that shape an output (recorded in it, so a re-run with other settings redoes the image), the head
    by its path and the content of its files (:func:`~detecture.bridge.head.head_digest`, as ``bench`` records it: a
    head retrained into its folder is another setting). Paths are recorded :func:`~detecture.utils.paths.printable`,
    as image names are: a head folder named in Latin-1 must not make its record unwritable. The classical method's
    settings are recorded when given and its seed when it is not the default, so a default run's record names
    neither."""
    from ..service import CLASSICAL_SEED
    from ..utils.paths import printable, resolved

    regime = request.regime
    settings = {"method": request.method,
                "regime": {"kind": regime.kind, "count": regime.count, "query": regime.text}}
    if request.method == "detecture":
        from ..bridge.head import head_digest

        head = resolved(request.head) if request.head is not None else None
        options = request.load_options()  # the defaults filled in: the same run records the same settings
        settings.update(grounding=request.grounding, head=printable(head) if head else None,
                        head_files=head_digest(head)[:16] if head else None, qwen=printable(options["qwen"]),
                        sam3=printable(options["sam3"]), dtype=request.dtype, quantization=request.quantization,
                        max_new_tokens=options["max_new_tokens"], tiny=request.tiny)
    else:
        if request.classical_params is not None:
            settings["classical_params"] = request.classical_params.to_dict()
        if request.seed != CLASSICAL_SEED:
            settings["seed"] = request.seed
    return settings


def run(args: argparse.Namespace) -> int:
    from ..output import OutputFolder
    from ..utils.parallel import Ranks, Shard, share

    request = build_request(args)
    shard = Shard.parse(args.shard)
    images, skipped, inputs = check_inputs(args, request)
    ranks = Ranks()
    mine = ranks.shard(shard)
    settings = settings_of(request)
    folder = OutputFolder(args.out, inputs, settings, args.force)
    try:
        claims = folder.claim(images, share(range(len(images)), mine))
        if not mine.whole:
            taken = len(claims.stems) + len(claims.done) + len(claims.busy) + len(claims.refused)
            print(f"share {mine.label()}: {taken} of {len(images)} image(s)")
        work = BatchWork(images, claims, folder)
        try:
            if args.method == "classical":
                _run_classical(args, request, settings, work)
            else:
                _run_detecture(args, request, settings, work, ranks)
        except Exception as exc:
            if not is_environment_error(exc):
                raise
            _summarise(work, skipped, args.out)  # what did finish, and its per-image lines
            raise stopped(exc, "segment") from None
        finally:
            work.release_unfinished()
        return _summarise(work, skipped, args.out)
    finally:
        folder.remove_if_unused()


class BatchWork:
    """The images of one run with their claimed output names, and what became of each."""

    def __init__(self, images: list[Path], claims: "Claims", folder: "OutputFolder") -> None:
        self.images, self.claims, self.folder = images, claims, folder
        self.rows: dict[int, dict] = {}
        self.failures: dict[int, str] = dict(claims.refused)  # failed before work starts: no output name

    @property
    def planned(self) -> list[tuple[int, Path, Path]]:
        """The claimed images not yet finished or failed: ``(index, path, output stem)``."""
        return [(i, self.images[i], stem) for i, stem in sorted(self.claims.stems.items())
                if i not in self.rows and i not in self.failures]

    def finished(self, index: int, row: dict | None, error: str | None) -> None:
        """Record an image's outcome and drop its claim: a written output is finished, a failed image's name free."""
        if row is not None:
            self.rows[index] = row
        else:
            self.failures[index] = error or "failed"
        self.folder.release(self.claims.stems[index])

    def release_unfinished(self) -> None:
        for i, stem in self.claims.stems.items():
            if i not in self.rows and i not in self.failures:
                self.folder.release(stem)


def _run_classical(args: argparse.Namespace, request: "SegmentRequest", settings: dict, work: BatchWork) -> None:
    from tqdm import tqdm

    from contextlib import closing

    from ..utils.parallel import default_workers
    from .segment_classical import ClassicalJob, run_classical

    jobs = [ClassicalJob(i, path, stem, request.regime, settings, request.seed, request.classical_params)
            for i, path, stem in work.planned]
    # closing(): an interrupt raised here, between two results, stops the workers before the caller releases the
    # unfinished claims; left to garbage collection (the traceback holds this frame), a worker could still be
    # writing an output, or its temporary, after its claim was dropped
    with tqdm(total=len(jobs), desc="segment (classical)", unit="img") as progress, \
            closing(run_classical(jobs, args.workers or default_workers())) as outcomes:
        for index, row, error in outcomes:
            work.finished(index, row, error)
            progress.update(1)


def _summarise(work: BatchWork, skipped: Skipped, out: Path) -> int:
    from ..output import print_table

    print_table([work.rows[i] for i in sorted(work.rows)])
    for i in sorted(work.failures):
        path, message = work.images[i], work.failures[i]
        print(f"error: {message}" if str(path) in message else f"error: {path}: {message}", file=sys.stderr)
    extra = f", {skipped}" if skipped else ""
    done, busy = len(work.claims.done), len(work.claims.busy)
    if done:
        extra += f", {done} already done with the same settings (skipped; --force redoes them)"
    if busy:
        extra += f", {busy} being segmented by another run in this folder (skipped)"
    replaced = [i for i in work.claims.replaced if i in work.rows]  # a failed redo replaced nothing
    if replaced:
        extra += f", {len(replaced)} output(s) made with other settings replaced (another --out keeps both)"
    where = f"; outputs in {out}" if work.rows or done else ""  # a folder this run made and left empty is removed
    print(f"{len(work.rows)} image(s) segmented, {len(work.failures)} failed{extra}{where}")
    return for_failures(len(work.failures))


def _run_detecture(args: argparse.Namespace, request: "SegmentRequest", settings: dict, work: BatchWork,
                   ranks: "Ranks") -> None:
    from dataclasses import replace

    from tqdm import tqdm

    from .. import service
    from ..images import as_rgb_array, load_image_and_frame
    from ..output import write_outputs

    for index, path, _ in work.planned:  # bad files are reported before the models load (seconds, not minutes)
        try:
            service.check_image_file(path, request)
        except DetectureError as exc:
            work.finished(index, None, str(exc))
    if not work.planned:
        return
    if request.device is None and ranks.device is not None and not request.tiny:
        request = replace(request, device=ranks.device)  # one GPU per launched process (tiny backbones use the CPU)
    regime = request.regime
    pipe = service.load_pipeline(request)
    if args.show_contract:
        print(f"inference contract ({'head ' + str(args.head) if args.head else 'no head: defaults'}):")
        print(pipe.contract.summary())
    planned = work.planned
    progress = tqdm(total=len(planned), desc="segment", unit="img")
    batch_size = args.batch_size or 1
    for start in range(0, len(planned), batch_size):
        loaded = []
        for index, path, stem in planned[start:start + batch_size]:
            try:
                image, frame = load_image_and_frame(path)
                loaded.append((index, path, stem, as_rgb_array(image), frame))
            except DetectureError as exc:
                work.finished(index, None, str(exc))
                progress.update(1)
        if not loaded:
            continue
        try:
            results = service.segment([image for _, _, _, image, _ in loaded], request, pipe)
        except DetectureError as exc:  # a data problem of this batch: record it, go on
            for index, *_ in loaded:
                work.finished(index, None, f"segmentation failed: {exc}")
            progress.update(len(loaded))
            continue
        for (index, path, stem, image, frame), result in zip(loaded, results):
            work.finished(index, write_outputs(stem, path, image, result, regime, note=service.TINY_NOTE if args.tiny
                                               else None, settings=settings, frame=frame), None)
            progress.update(1)
    progress.close()
