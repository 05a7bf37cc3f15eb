"""Scaling of the batch commands from 1 to N processes, the merge step's cost, and a planning table.

Part 1 runs ``bench`` (classical), ``mine`` (template describer) and ``segment`` (classical) as a user would: one
plain process, then ``accelerate launch --multi_gpu --num_processes N`` on CPU (gloo), every process with one worker
and one BLAS thread, so N processes use N cores. Each command runs twice per process count, on ``--small`` and on
the full item count: the difference removes the fixed cost (imports, process-group start, reports) and gives the
per-item cost and the speed-up of the work itself; the whole-command speed-up is printed beside it. The CPU seconds
of the work (all processes together) are printed too: on a machine shared with other jobs the wall-clock speed-up
depends on the others' load, while equal CPU seconds for 1 and N processes show that splitting adds no work.

Part 2 times the merge step of ``mine`` (rank 0 reading every scene's result file and writing metadata, rejections
and summary) on ``--merge-scenes`` synthetic result files, and of ``bench`` (merging part files into one cell).

Part 3 turns the measured per-item costs into a planning table for the full Textured-ADE20K mining and 100k-image
segmentation on 8 processes.

    python perf/bench_scaling.py [--processes 1 2] [--images 32] [--scenes 400] [--small 4]
                                       [--merge-scenes 20000] [--data ../shared/data/dtd]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_miner import write_ade  # noqa: E402

from detecture.miner.config import load_config  # noqa: E402
from detecture.miner.orchestrate import KEPT, SceneMiner, _load_done, assemble  # noqa: E402
from detecture.benchmark import cell_store  # noqa: E402
from detecture.utils.parallel import cpu_count  # noqa: E402

TEXTURED_SCENES, TEXTURED_STRENGTHS = 20_210, 11  # Textured-ADE20K as TextureSAM releases it
SEGMENT_IMAGES, PLAN_PROCESSES = 100_000, 8


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(argv: list[str], processes: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``detecture <argv>`` on ``processes`` processes (a plain process for one)."""
    if processes == 1:
        cmd = [sys.executable, "-m", "detecture", *argv]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_port()), "-m", "detecture", *argv]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:1])} on {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return seconds, _children_cpu() - cpu


def commands(tmp: Path, data: Path, n_images: int, n_scenes: int) -> dict:
    """argv builders per command: ``(out folder, item count) -> argv``."""
    ade = tmp / "ADEChallengeData2016"
    write_ade(ade, n_scenes, seed=0)
    images = sorted((data / "images").iterdir())
    return {
        "bench (classical)": lambda out, n: ["bench", "--datasets", str(data), "--methods", "classical",
                                             "--limit", str(n), "--gallery", "0", "--out", str(out)],
        "mine (template)": lambda out, n: ["mine", "--root", str(ade), "--limit", str(n), "--workers", "1",
                                           "--out", str(out)],
        "segment (classical)": lambda out, n: ["segment", *map(str, images[:n]), "--method", "classical",
                                               "--workers", "1", "--out", str(out)],
    }, {"bench (classical)": n_images, "mine (template)": n_scenes, "segment (classical)": n_images}


def scaling(tmp: Path, data: Path, processes: list[int], n_images: int, n_scenes: int, small: int) -> list[dict]:
    argvs, sizes = commands(tmp, data, n_images, n_scenes)
    rows = []
    for name, argv in argvs.items():
        row = {"command": name, "items": sizes[name]}
        for p in processes:
            fixed, fixed_cpu = run_command(argv(tmp / f"{name}-{p}-small".replace(" ", "_"), small), p)
            total, total_cpu = run_command(argv(tmp / f"{name}-{p}".replace(" ", "_"), sizes[name]), p)
            scale = sizes[name] / (sizes[name] - small)
            work = (total - fixed) * scale if total > fixed else None
            row[p] = {"total": total, "work": work, "cpu": (total_cpu - fixed_cpu) * scale}
            print(f"  {name}, {p} process(es): {total:.1f} s whole command, {_s(work)} s of work, "
                  f"{row[p]['cpu']:.1f} CPU s of work", flush=True)
        rows.append(row)
    return rows


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def merge_mine(tmp: Path, n: int) -> tuple[float, float]:
    """Seconds to read ``n`` scene result files and to write the merged metadata, rejections and summary."""
    from detecture.miner.review import build_summary

    out = tmp / "merge-mine"
    (out / "mine_state" / "scenes").mkdir(parents=True)
    for i in range(n):
        sid = f"ADE_train_{i:08d}"
        state = {"scene": sid, "status": KEPT, "score": 70.0, "components": {},
                 "regions": [{"name": f"class{k}", "classes": [k], "area": 0.3, "mask_path": f"masks/{sid}_{k}.png"}
                             for k in (1, 2, 3)],
                 "samples": [{"id": f"{sid}__{d}", "degree": d, "image_path": f"images/{sid}__{d}.jpg",
                              "descriptions": ["Texture of a", "Texture of b", "Texture of c"]}
                             for d in ("original", "degree_0.5")],
                 "rejected": []}
        (out / "mine_state" / "scenes" / f"{sid}.json").write_text(json.dumps(state))
    cfg = load_config()
    miner = SceneMiner(None, None, cfg, None, out)
    scenes = [SimpleNamespace(id=f"ADE_train_{i:08d}") for i in range(n)]
    start = time.perf_counter()
    states = _load_done(miner, scenes)
    read = time.perf_counter() - start
    start = time.perf_counter()
    ordered = [states[s.id] for s in scenes]
    records = assemble(out, ordered, cfg, seed=0)
    build_summary(ordered, records, cfg)
    return read, time.perf_counter() - start


def merge_bench(tmp: Path, n: int, parts: int = 8) -> float:
    """Seconds to merge ``parts`` part files of ``n`` sample records into one cell."""
    cell = tmp / "merge-bench"
    writers = [cell_store.ShardWriter(cell, p) for p in range(parts)]
    for i in range(n):
        writers[i % parts]._fh.write(json.dumps({"id": f"{i:06d}", "status": "ok", "miou": 0.5}) + "\n")
    for w in writers:
        w.close()
    start = time.perf_counter()
    cell_store.merge_cell(cell, [f"{i:06d}" for i in range(n)])
    return time.perf_counter() - start


def planning(rows: list[dict]) -> list[tuple[str, str, str]]:
    """Hours on ``PLAN_PROCESSES`` processes from one process's measured per-item CPU cost (perfect scaling assumed:
    the items are independent; the measured 2-process speed-up and CPU seconds say how close it comes)."""
    per_item = {r["command"]: r[1]["cpu"] / r["items"] for r in rows if r.get(1, {}).get("cpu")}
    plan = []
    mine_s = per_item.get("mine (template)")
    if mine_s is not None:
        hours = TEXTURED_SCENES * mine_s * TEXTURED_STRENGTHS / PLAN_PROCESSES / 3600
        plan.append((f"mine, template, Textured-ADE20K ({TEXTURED_SCENES:,} scenes x {TEXTURED_STRENGTHS} "
                     "strengths)", f"{mine_s * 1000:.0f} ms per ADE20K scene (x {TEXTURED_STRENGTHS} upper bound)",
                     f"{hours:.2f} h"))
    seg_s = per_item.get("segment (classical)")
    if seg_s is not None:
        plan.append((f"segment, classical, {SEGMENT_IMAGES:,} images", f"{seg_s:.2f} s per image (1 core)",
                     f"{SEGMENT_IMAGES * seg_s / PLAN_PROCESSES / 3600:.2f} h"))
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=32, help="images for bench and segment")
    parser.add_argument("--scenes", type=int, default=400, help="synthetic ADE20K scenes for mine")
    parser.add_argument("--small", type=int, default=4, help="items of the run that measures the fixed cost")
    parser.add_argument("--merge-scenes", type=int, default=20_000)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "dtd")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"# bench_scaling: {platform.machine()}, {cpu_count()} CPUs, load average {load:.1f} at start, "
          f"{datetime.date.today()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = scaling(tmp, args.data, args.processes, args.images, args.scenes, args.small)
        read, write = merge_mine(tmp, args.merge_scenes)
        bench_merge = merge_bench(tmp, args.merge_scenes)
    base = args.processes[0]
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    print("| command | items | " + " | ".join(f"{p} proc.: work s (whole s) [work CPU s]" for p in args.processes)
          + " | speed-up, work (whole) |")
    print("|---|---|" + "---|" * len(args.processes) + "---|")
    for r in rows:
        cells = " | ".join(f"{_s(r[p]['work'])} ({r[p]['total']:.1f}) [{r[p]['cpu']:.1f}]" for p in args.processes)
        last = args.processes[-1]
        speed = f"{_ratio(r[base]['work'], r[last]['work'])} ({_ratio(r[base]['total'], r[last]['total'])})"
        print(f"| {r['command']} | {r['items']} | {cells} | {speed} |")
    print(f"\nmerge, mine: {args.merge_scenes:,} scene result files read in {read:.2f} s, metadata + rejections + "
          f"summary written in {write:.2f} s; bench: {args.merge_scenes:,} records in 8 part files merged in "
          f"{bench_merge:.2f} s")
    print(f"\n| plan ({PLAN_PROCESSES} processes) | measured per-item cost | time |\n|---|---|---|")
    for what, cost, hours in planning(rows):
        print(f"| {what} | {cost} | {hours} |")


if __name__ == "__main__":
    main()
