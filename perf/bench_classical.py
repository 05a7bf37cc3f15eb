"""The classical segmenter: quality on Outex, DTD and real-photo mosaics, throughput and peak memory.

    python perf/bench_classical.py quality [--outex ../shared/data/outex] [--dtd ../shared/data/dtd] [--workers 2]
    python perf/bench_classical.py sweep --vary band=8,12,24 [--set position_weight=0.6]
    python perf/bench_classical.py speed [--images 8] [--large-images 2]
    python perf/bench_classical.py startup [--runs 3]

``quality`` scores ``segment_texture`` with the benchmark's own metric code (:mod:`detecture.benchmark.metrics`) on
Outex and on the DTD colour mosaics with K given and K chosen, reporting each set's tuning quarter (sorted ids, every
fourth: the only images settings were chosen on) and the other three quarters separately, and on mosaics of real
``skimage.data`` photos with smooth curved boundaries built here and the README's quick-start mosaic.
``--unrefined`` scores the pass-1 partition (features at 256 px, bilinearly upsampled logits) for before/after
comparisons. ``--classical-config FILE`` and ``--set KEY=VALUE`` (YAML value syntax, repeatable) score other
settings than the defaults (:class:`detecture.classical.ClassicalParams`); ``quality``, ``sweep`` and ``speed`` take
both.

``sweep`` is how settings are chosen: one row per value of the ``--vary`` field (the others at the defaults, or as
``--set``), scored on the tuning quarters only, so a choice never sees the parts it is reported on; the README
mosaic is scored beside them. ``quality`` then scores the chosen settings once on everything.

``speed`` measures images/s (K = 5) with 1 and 2 worker processes (one BLAS/OpenMP thread each) on a real-photo
mosaic tiled to 512² and to 4000×3000 (asked for five regions in two or three textures, so the boundary band is
large: the slow case) and on the first Outex mosaics (512², five textures), and the peak RSS of one 12 MP image in
a fresh process.

``startup`` times whole commands in fresh processes, as a user meets them: ``detecture segment`` of the README
mosaic (``--workers 1``) and ``detecture bench`` of one Outex mosaic, both ``--method classical``, with the peak RSS
of the process and whether it imported torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from detecture.utils.parallel import THREAD_VARIABLES  # noqa: E402  (loads no BLAS)

for var in THREAD_VARIABLES:  # before numpy loads its BLAS, which reads them once
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from detecture.benchmark.metrics import bootstrap_mean  # noqa: E402
from detecture.benchmark.scoring import score_logits  # noqa: E402
from detecture.classical import ClassicalParams, load_params, segment_texture  # noqa: E402
from detecture.classical.params import parse_params  # noqa: E402
from detecture.errors import InputError  # noqa: E402
from detecture.utils.typed_config import parse_override  # noqa: E402

OUTEX = REPO.parent / "shared" / "data" / "outex"
DTD = REPO.parent / "shared" / "data" / "dtd"
PHOTO_TEXTURES = ("brick", "grass", "gravel")
PHOTO_SIZE = 384
METRICS = ("miou", "panoptic_iou", "boundary_f", "ari", "k_correct")


def is_tuning(index: int) -> bool:
    """Whether the ``index``-th record by sorted id is in the tuning quarter (every fourth), the only images settings
    are chosen on."""
    return index % 4 == 0


def dataset_samples(root: Path, tuning_only: bool = False) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, image, gt label map) for every record of a unified-layout dataset (Outex, DTD), sorted by id;
    ``tuning_only``: the tuning quarter's, the others not even read."""
    from detecture.benchmark.datasets import open_dataset

    ds = open_dataset(str(root))
    out = []
    for i, record in enumerate(sorted(ds.records, key=lambda r: r.id)):
        if tuning_only and not is_tuning(i):
            continue
        sample, truth, _ = ds.load(record)
        out.append((record.id, sample.image, truth.labels))
    return out


def photo_mosaics(n: int = 12, size: int = PHOTO_SIZE) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Mosaics of 2 or 3 real ``skimage.data`` textures separated by smooth curved (sinusoidal / circular) borders."""
    from skimage import data

    photos = {name: getattr(data, name)() for name in PHOTO_TEXTURES}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for i in range(n):
        names = [PHOTO_TEXTURES[(i + j) % 3] for j in range(2 + i % 2)]
        phase, amp, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.15), rng.uniform(1, 2.5)
        labels = np.where(xx > 0.5 + amp * np.sin(2 * np.pi * freq * yy + phase), 2, 1)
        if len(names) == 3:
            cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.25)
            labels = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 3, labels)
        image = np.zeros((size, size), np.uint8)
        for j, name in enumerate(names):
            photo = photos[name]
            oy, ox = rng.integers(0, photo.shape[0] - size + 1), rng.integers(0, photo.shape[1] - size + 1)
            image = np.where(labels == j + 1, photo[oy : oy + size, ox : ox + size], image)
        out.append((f"photo_{i:02d}", np.repeat(image[..., None], 3, axis=2), labels.astype(np.uint8)))
    return out


def _score_one(args: tuple) -> dict:
    sample_id, image, gt, k, options = args
    with threadpool_limits(limits=1):
        start = time.process_time()
        logits = segment_texture(image, k, seed=0, **options)
        seconds = time.process_time() - start
    masks = np.stack([gt == v for v in range(1, int(gt.max()) + 1)])
    score, _ = score_logits(logits, masks)
    return {"id": sample_id, "seconds": seconds, **score.as_dict()}


def score_set(samples: list, k_of, options: dict, workers: int) -> list[dict]:
    """Per-sample scores; ``k_of(gt)`` is the K the segmenter is told (``None``: autonomous)."""
    jobs = [(sid, image, gt, k_of(gt), options) for sid, image, gt in samples]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_score_one, jobs))


def summary_row(name: str, rows: list[dict]) -> str:
    cells = []
    for metric in METRICS:
        agg = bootstrap_mean(np.array([r[metric] for r in rows]))
        cells.append(f"{agg.mean:.3f} ± {(agg.high - agg.low) / 2:.3f}")
    seconds = np.mean([r["seconds"] for r in rows])
    return f"| {name} | {len(rows)} | " + " | ".join(cells) + f" | {seconds:.2f} |"


def settings(config: str | None, pairs: list[str]) -> ClassicalParams:
    """The settings of ``--classical-config`` (the defaults without it) with the ``--set KEY=VALUE`` pairs applied."""
    base = load_params(config) if config else ClassicalParams()
    overrides = dict(parse_override(pair) for pair in pairs)
    return parse_params(base.to_dict(), config or "the default settings", overrides)


def changed(params: ClassicalParams) -> str:
    """The fields of ``params`` that differ from the defaults, as ``key=value`` (``defaults`` when none do)."""
    default = ClassicalParams().to_dict()
    return ", ".join(f"{k}={v}" for k, v in params.to_dict().items() if default[k] != v) or "defaults"


def quality(args: argparse.Namespace) -> None:
    from detecture.demo.examples import mosaic_three

    options = {"refine": not args.unrefined, "params": args.params}
    print(f"# bench_classical quality ({'pass 1 only' if args.unrefined else 'two passes and the graph cut'}; "
          f"settings: {changed(args.params)})")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} workers, {datetime.date.today()}")
    print("| set | n | matched mIoU | panoptic IoU | boundary F | ARI | K acc. | CPU s/image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    regimes = (("K given", lambda gt: int(gt.max())), ("K chosen", lambda gt: None))
    for label, root in (("Outex", args.outex), ("DTD", args.dtd)):
        records = dataset_samples(Path(root))
        tune = [s for i, s in enumerate(records) if is_tuning(i)]
        held = [s for i, s in enumerate(records) if not is_tuning(i)]
        sets = [("tune", tune), ("held-out", held)] if not args.tune_only else [("tune", tune)]
        for regime, k_of in regimes:
            for name, samples in sets:
                rows = score_set(samples, k_of, options, args.workers)
                print(summary_row(f"{label} {name}, {regime}", rows), flush=True)
    if not args.tune_only:
        readme = [("mosaic_three", *mosaic_three())]
        for name, samples in (("photo mosaics", photo_mosaics()), ("README mosaic", readme)):
            for regime, k_of in regimes:
                print(summary_row(f"{name}, {regime}", score_set(samples, k_of, options, args.workers)), flush=True)


def sweep(args: argparse.Namespace) -> None:
    from detecture.demo.examples import mosaic_three

    key, _, text = args.vary.partition("=")
    if not key or not text:
        raise InputError(f"--vary expects KEY=VALUE[,VALUE...], got {args.vary!r}")
    try:
        values = [parse_override(f"{key}={value}")[1] for value in text.split(",")]
        rows = [(value, parse_params(args.params.to_dict(), "--vary", {key: value}))
                for value in values]
    except InputError as exc:  # the override parsers name their option --set
        raise InputError(str(exc).replace("--set ", "--vary ", 1)) from None
    default = getattr(ClassicalParams(), key)
    print(f"# bench_classical sweep of {key} on the tuning quarters (other settings: {changed(args.params)})")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} workers, {datetime.date.today()}")
    print(f"| `{key}` | DTD K given: mIoU / BF | DTD K chosen: K acc. / PQ | Outex K given: mIoU / BF "
          "| Outex K chosen: K acc. / PQ | README mosaic: K = 3 given mIoU / K chosen | CPU s/image, K given |")
    print("|---|---|---|---|---|---|---|")
    tune = {label: dataset_samples(Path(root), tuning_only=True)
            for label, root in (("DTD", args.dtd), ("Outex", args.outex))}
    readme = [("mosaic_three", *mosaic_three())]
    for value, params in rows:
        options, cells, seconds = {"params": params}, [], []
        for samples in tune.values():
            given = score_set(samples, lambda gt: int(gt.max()), options, args.workers)
            chosen = score_set(samples, lambda gt: None, options, args.workers)
            cells += [f"{_mean(given, 'miou'):.3f} / {_mean(given, 'boundary_f'):.3f}",
                      f"{_mean(chosen, 'k_correct'):.3f} / {_mean(chosen, 'panoptic_iou'):.3f}"]
            seconds += [r["seconds"] for r in given]
        given = score_set(readme, lambda gt: 3, options, 1)[0]
        chosen = score_set(readme, lambda gt: None, options, 1)[0]
        cells.append(f"{given['miou']:.3f} / K = {chosen['k_pred']}")
        label = f"**{value} (default)**" if value == default else str(value)
        print(f"| {label} | " + " | ".join(cells) + f" | {np.mean(seconds):.2f} |", flush=True)


def _mean(rows: list[dict], metric: str) -> float:
    return float(np.mean([r[metric] for r in rows]))


def _time_batch(images: list[np.ndarray], params: ClassicalParams) -> None:
    with threadpool_limits(limits=1):
        for image in images:
            segment_texture(image, 5, seed=0, params=params)


def throughput(images: list[np.ndarray], workers: int, params: ClassicalParams) -> float:
    """Images/s (wall clock) for segmenting ``images`` (K = 5) split over ``workers`` processes (pool start
    excluded)."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_time_batch, [[images[0][:64, :64]]] * workers, [params] * workers))  # warm the workers
        start = time.perf_counter()
        list(pool.map(_time_batch, [images[i::workers] for i in range(workers)], [params] * workers))
        return len(images) / (time.perf_counter() - start)


def speed_image(h: int, w: int) -> np.ndarray:
    """A real-photo mosaic tiled to h × w, so the timing is on real texture content."""
    base = photo_mosaics(1)[0][1]
    reps = (-(-h // base.shape[0]), -(-w // base.shape[1]))
    return np.tile(base, (*reps, 1))[:h, :w].copy()


def peak_rss_12mp(params: ClassicalParams) -> float:
    """Peak RSS (GiB) of a fresh process segmenting one 4000×3000 image."""
    code = (
        "import json, resource, sys; sys.path.insert(0, sys.argv[1]); "
        "from perf.bench_classical import speed_image; "
        "from detecture.classical import ClassicalParams, segment_texture; "
        "params = ClassicalParams(**json.loads(sys.argv[2])); "
        "img = speed_image(3000, 4000); segment_texture(img, 5, seed=0, params=params); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO), json.dumps(params.to_dict())], check=True,
                         capture_output=True, text=True)
    return int(out.stdout.strip()) / 2**20


def speed(args: argparse.Namespace) -> None:
    print(f"# bench_classical speed: {platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}, "
          f"load average {os.getloadavg()[0]:.1f}; settings: {changed(args.params)}")
    print("| images | size | workers | images/s | images/s per worker |")
    print("|---|---|---:|---:|---:|")
    outex = [image for _, image, _ in dataset_samples(Path(args.outex))]
    for label, (h, w), n in (("tiled photo mosaic", (512, 512), args.images),
                             ("tiled photo mosaic", (3000, 4000), args.large_images)):
        if n == 0:  # e.g. --large-images 0: that size is not measured
            continue
        image = speed_image(h, w)
        for workers in (1, 2):
            rate = throughput([image] * (n * workers), workers, args.params)
            print(f"| {label} | {w}×{h} | {workers} | {rate:.2f} | {rate / workers:.2f} |", flush=True)
    for workers in (1, 2):  # the benchmark's own 512² images (five textures each)
        rate = throughput(outex[: args.images * workers], workers, args.params)
        print(f"| Outex mosaics | 512×512 | {workers} | {rate:.2f} | {rate / workers:.2f} |", flush=True)
    print(f"peak RSS, one 4000×3000 image in a fresh process: {peak_rss_12mp(args.params):.2f} GiB")


_COMMAND_PROBE = (
    "import resource, sys, time; from detecture.cli import main; start = time.perf_counter(); "
    "code = main(sys.argv[1:]); seconds = time.perf_counter() - start; "
    "print('PROBE', code, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 'torch' in sys.modules)"
)


def run_command(argv: list[str]) -> tuple[float, float, bool]:
    """(wall seconds of the whole process, its peak RSS in MiB, whether torch was imported) of one CLI command."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _COMMAND_PROBE, *argv], check=True, capture_output=True, text=True,
                         cwd=REPO)
    seconds = time.perf_counter() - start
    probe = next(line.split() for line in out.stdout.splitlines() if line.startswith("PROBE"))
    if probe[1] != "0":
        raise RuntimeError(f"{' '.join(argv)} exited with {probe[1]}: {out.stderr[-500:]}")
    return seconds, int(probe[3]) / 1024, probe[4] == "True"


def startup(args: argparse.Namespace) -> None:
    import tempfile

    from PIL import Image

    from detecture.demo.examples import mosaic_three

    print(f"# bench_classical startup: {platform.machine()}, {os.cpu_count()} CPUs, {datetime.date.today()}, "
          f"median of {args.runs} fresh processes")
    print("| command | wall s | peak RSS MiB | imports torch |")
    print("|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "textures.png"
        Image.fromarray(mosaic_three()[0]).save(image)
        commands = {
            "segment textures.png --method classical --k 3 --workers 1":
                lambda i: ["segment", str(image), "--method", "classical", "--k", "3", "--workers", "1",
                           "--out", f"{tmp}/seg{i}"],
            "bench --datasets outex --methods classical --limit 1":
                lambda i: ["bench", "--datasets", str(args.outex), "--methods", "classical", "--limit", "1",
                           "--out", f"{tmp}/bench{i}"],
        }
        for label, argv in commands.items():
            runs = [run_command(argv(i)) for i in range(args.runs)]
            print(f"| `detecture {label}` | {np.median([r[0] for r in runs]):.2f} | "
                  f"{np.median([r[1] for r in runs]):.0f} | {'yes' if any(r[2] for r in runs) else 'no'} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--outex", default=str(OUTEX))
    q.add_argument("--dtd", default=str(DTD))
    q.add_argument("--workers", type=int, default=2)
    q.add_argument("--unrefined", action="store_true", help="skip pass 2 (boundary placement), for comparison")
    q.add_argument("--tune-only", action="store_true", help="only the tuning quarters of Outex and DTD")
    w = sub.add_parser("sweep", help="score one setting's values on the tuning quarters")
    w.add_argument("--vary", required=True, metavar="KEY=V1,V2,...",
                   help="a number field and its values, e.g. band=8,12,24")
    w.add_argument("--outex", default=str(OUTEX))
    w.add_argument("--dtd", default=str(DTD))
    w.add_argument("--workers", type=int, default=2)
    s = sub.add_parser("speed")
    s.add_argument("--images", type=int, default=8, help="512² images per worker")
    s.add_argument("--large-images", type=int, default=2, help="4000×3000 images per worker")
    s.add_argument("--outex", default=str(OUTEX))
    for command in (q, w, s):
        command.add_argument("--classical-config", metavar="FILE", help="YAML or JSON file of ClassicalParams fields")
        command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="change one ClassicalParams field, YAML value syntax (repeatable)")
    t = sub.add_parser("startup")
    t.add_argument("--runs", type=int, default=3, help="fresh processes per command (the median is reported)")
    t.add_argument("--outex", default=str(OUTEX))
    args = parser.parse_args()
    try:
        if args.command != "startup":
            args.params = settings(args.classical_config, args.set)
        {"quality": quality, "sweep": sweep, "speed": speed, "startup": startup}[args.command](args)
    except InputError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
