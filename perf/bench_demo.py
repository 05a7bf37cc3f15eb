"""First-response latency of ``detecture demo`` for ``classical`` on a 1-MP image (goal: <= 2 s).

    python perf/bench_demo.py [--side 1000] [--repeats 5] [--k auto]

Runs the real command (``python -m detecture demo``) in a subprocess on a free port, waits for its ready line
(start-up includes its warm-up request), then times requests through ``gradio_client`` (upload, queue,
segmentation, outputs, download): the first one after start and the median of the next ``--repeats``. Beside wall
time it reports the server process's CPU time per request (from /proc): on a shared machine other jobs inflate wall
time, not CPU time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_ready(server: subprocess.Popen) -> None:
    """Block until the demo prints its ready line (after its warm-up request), as a user would wait for it."""
    for line in server.stdout:
        if "demo ready on" in line:
            return
    raise SystemExit(f"the demo exited with status {server.wait()} before it was ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=1000, help="image side in px (1000 = 1 MP)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", default="auto", help="auto or 1..6")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as folder:
        tempfile.tempdir = folder  # gradio_client leaves an empty folder per download in the temporary directory
        measure(args, Path(folder) / "mosaic-1mp.jpg")


def measure(args: argparse.Namespace, path: Path) -> None:
    """Serve the demo in a subprocess and time requests with ``path`` (written here) as the upload."""
    from gradio_client import Client, handle_file

    from detecture.demo.examples import mosaic_three

    Image.fromarray(mosaic_three()[0]).resize((args.side, args.side), Image.Resampling.BICUBIC).save(path, quality=92)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "detecture", "demo", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until_ready(server)
        start_s = time.perf_counter() - start
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(path.parent))
        wall, cpu, regions = [], [], 0
        for _ in range(1 + args.repeats):
            t, c = time.perf_counter(), cpu_seconds(server.pid)
            _, table, _, _ = client.predict(handle_file(str(path)), "classical", args.k, "", api_name="/segment")
            wall.append(time.perf_counter() - t)
            cpu.append(cpu_seconds(server.pid) - c)
            regions = len(table["data"])
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; image {args.side}x{args.side}, "
          f"K={args.k} -> {regions} regions")
    print("| measure | wall s | server CPU s |\n|---|---:|---:|")
    print(f"| `detecture demo` start until ready (imports, warm-up request) | {start_s:.2f} | |")
    print(f"| first response after start | {wall[0]:.2f} | {cpu[0]:.2f} |")
    print(f"| later responses (median of {args.repeats}) | {statistics.median(wall[1:]):.2f} | "
          f"{statistics.median(cpu[1:]):.2f} |")


if __name__ == "__main__":
    main()
