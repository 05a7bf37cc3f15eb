"""First-response latency of ``detecture demo`` for ``classical`` on a 1-MP image (goal: <= 2 s).

    python benchmarks/bench_demo.py [--side 1000] [--repeats 5]

Starts the demo in-process on a free port (the engine warms the classical segmenter up at start, as `detecture
demo` does), then times, through ``gradio_client`` (upload, queue, segmentation, outputs, download), the first
request after start and the median of the next ``--repeats``. The engine's own stages are timed separately. CPU time (this process: server and client) is printed beside
wall time because on a shared machine other jobs' load inflates wall time but not CPU time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_times(engine, path: Path, k: str) -> dict[str, float]:
    """Per-stage wall time of one request inside the engine (no web server)."""
    from threadpoolctl import threadpool_limits

    from detecture import api
    from detecture.demo.uploads import load_upload

    times, t = {}, time.perf_counter()
    image, original = load_upload(path)
    times["decode upload"] = time.perf_counter() - t
    t = time.perf_counter()
    with threadpool_limits(limits=1):
        result = api.segment_classical(image, api.regime_for(None if k == "auto" else k))
    times["classical segment + describe"] = time.perf_counter() - t
    t = time.perf_counter()
    engine._response(path, image, original, result, api.regime_for(None if k == "auto" else k), result.label_map,
                     "classical", 0.0)
    times["label map, scores, JSON, PNG"] = time.perf_counter() - t
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=1000, help="image side in px (1000 = 1 MP)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", default="auto", help="auto or 1..6")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    from detecture.demo.app import launch
    from detecture.demo.engine import DemoEngine
    from detecture.demo.examples import mosaic_three

    folder = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    path = folder / "mosaic-1mp.jpg"
    Image.fromarray(mosaic_three()[0]).resize((args.side, args.side), Image.Resampling.BICUBIC).save(path, quality=92)

    t = time.perf_counter()
    engine = DemoEngine.create()
    app = launch(engine, port=free_port(), block=False)
    start_s = time.perf_counter() - t
    client = Client(app.local_url, verbose=False)
    latencies, cpu = [], []
    for _ in range(1 + args.repeats):
        t, c = time.perf_counter(), time.process_time()
        _, table, _, status = client.predict(handle_file(str(path)), "classical", args.k, "", api_name="/segment")
        latencies.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    stages = stage_times(engine, path, args.k)
    app.close()

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; image {args.side}x{args.side}, "
          f"K={args.k} -> {len(table['data'])} regions")
    print(f"| measure | wall s | CPU s (server + client) |\n|---|---:|---:|")
    print(f"| demo start (warm-up + server) | {start_s:.2f} | |")
    print(f"| first response after start | {latencies[0]:.2f} | {cpu[0]:.2f} |")
    print(f"| later responses (median of {args.repeats}) | {statistics.median(latencies[1:]):.2f} | "
          f"{statistics.median(cpu[1:]):.2f} |")
    for name, seconds in stages.items():
        print(f"| engine: {name} | {seconds:.2f} | |")


if __name__ == "__main__":
    main()
