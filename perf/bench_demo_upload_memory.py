"""Peak memory of reading one demo upload (``detecture.demo.uploads.load_upload``) for the formats that used to be
decoded at full size and copied as float: a 16-bit PNG, a 32-bit float TIFF and a palette PNG, each 10000 x 9999.

    python perf/bench_demo_upload_memory.py [--side 10000] [--folder /tmp/upload-memory]

Each file is read in a fresh Python process; its peak resident memory (Linux ``VmHWM``, reset after the imports) is
reported beside its resident memory right after importing the reader, so the difference is what the upload cost.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

READ = """
import re, sys
from pathlib import Path
from detecture.demo.uploads import load_upload
status = Path("/proc/self/status")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (Linux keeps the parent's across fork + exec)
before = int(re.search(r"VmRSS:\\s+(\\d+)", status.read_text()).group(1))
image, original = load_upload(sys.argv[1])
peak = int(re.search(r"VmHWM:\\s+(\\d+)", status.read_text()).group(1))
print(before // 1024, peak // 1024, image.shape[1], image.shape[0])
"""


def write_inputs(folder: Path, side: int) -> dict[str, Path]:
    """Gradients (they compress like smooth photos, so the files stay small) in the three formats."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = side, side - 1
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    paths = {"16-bit grey PNG": folder / "g16.png", "32-bit float TIFF": folder / "f.tif",
             "palette PNG": folder / "p.png"}
    Image.fromarray(np.repeat((ramp * 65535).astype(np.uint16), h, 0)).save(paths["16-bit grey PNG"])
    Image.fromarray(np.repeat(ramp, h, 0)).save(paths["32-bit float TIFF"], compression="tiff_adobe_deflate")
    palette = Image.fromarray(np.repeat((ramp * 15).round().astype(np.uint8), h, 0)).convert("P")
    palette.save(paths["palette PNG"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=10000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/upload-memory"))
    args = parser.parse_args()
    print(f"| upload ({args.side}x{args.side - 1}) | file MB | decoded MB | RSS after import MB | peak RSS MB | "
          "analysed at |")
    print("|---|---:|---:|---:|---:|---|")
    for name, path in write_inputs(args.folder, args.side).items():
        done = subprocess.run([sys.executable, "-c", READ, str(path)], cwd=REPO, capture_output=True, text=True,
                              check=True, env={"PYTHONPATH": str(REPO)})
        before, peak, w, h = map(int, done.stdout.split())
        with Image.open(path) as im:
            from detecture.demo.uploads import decoded_bytes

            decoded = decoded_bytes(im) / 2**20
        print(f"| {name} | {path.stat().st_size / 2**20:.1f} | {decoded:.0f} | {before} | {peak} | {w}x{h} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
