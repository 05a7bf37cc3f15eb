"""Wall time of one atomic file write (``detecture.utils.atomic.write_bytes``), with and without its flushes to disk.

    python perf/bench_atomic.py [--writes 500] [--size 20000] [--folder .]

Every output file (checkpoints, mined images and result files, benchmark records, overlays) is written through
``atomic``, which flushes the temporary file before the rename and the folder after it, so a power loss leaves the old
file or the new one. This measures what the flushes cost per write: ``--writes`` writes of ``--size`` random bytes
over 50 names in a temporary folder under ``--folder`` (on the disk to measure), best of three interleaved passes.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path
from unittest import mock

from detecture.utils import atomic


def per_write_ms(folder: str, data: bytes, writes: int) -> float:
    start = time.perf_counter()
    for i in range(writes):
        atomic.write_bytes(Path(folder) / f"f{i % 50}.bin", data)
    return (time.perf_counter() - start) / writes * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--size", type=int, default=20_000, help="bytes per file")
    parser.add_argument("--folder", default=".", help="where the temporary folder is made (the disk measured)")
    args = parser.parse_args()
    data = os.urandom(args.size)
    best = {"flushed (shipped)": float("inf"), "not flushed": float("inf")}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for _ in range(3):
            for label in best:
                with ExitStack() as stack:
                    if label == "not flushed":
                        for name in ("_fsync_file", "_fsync_dir"):
                            stack.enter_context(mock.patch.object(atomic, name, lambda path: None))
                    best[label] = min(best[label], per_write_ms(folder, data, args.writes))
    print(f"# bench_atomic: {platform.machine()}, {os.cpu_count()} CPUs, {date.today()}; {args.writes} writes of "
          f"{args.size} bytes")
    print("| write | ms per write |\n|---|---:|")
    for label, ms in best.items():
        print(f"| {label} | {ms:.2f} |")


if __name__ == "__main__":
    main()
