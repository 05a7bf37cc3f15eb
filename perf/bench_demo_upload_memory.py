"""Peak memory of reading one demo upload (``detecture.demo.uploads.load_upload``) for the formats that used to be
decoded at full size and copied as float: a 16-bit grey PNG, a 32-bit float TIFF and a palette PNG, each 10000 x 9999,
and a 16-bit colour PNG (decoded at full depth, so it is kept within the decoding budget: 3000 x 2999 by default).

    python perf/bench_demo_upload_memory.py [--side 10000] [--colour-side 3000] [--folder /tmp/upload-memory]

Each file is read in a fresh Python process; its peak resident memory (Linux ``VmHWM``, reset after the imports) is
reported beside its resident memory right after importing the reader, so the difference is what the upload cost, with
the wall time of the read.
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
import re, sys, time
from pathlib import Path
from detecture.demo.uploads import load_upload
status = Path("/proc/self/status")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (Linux keeps the parent's across fork + exec)
before = int(re.search(r"VmRSS:\\s+(\\d+)", status.read_text()).group(1))
start = time.perf_counter()
image = load_upload(sys.argv[1])[0]
seconds = time.perf_counter() - start
peak = int(re.search(r"VmHWM:\\s+(\\d+)", status.read_text()).group(1))
print(before // 1024, peak // 1024, image.shape[1], image.shape[0], f"{seconds:.2f}")
"""


def write_inputs(folder: Path, side: int, colour_side: int) -> dict[str, Path]:
    """Gradients (they compress like smooth photos, so the files stay small) in the four formats."""
    import png

    folder.mkdir(parents=True, exist_ok=True)
    w, h = side, side - 1
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    paths = {"16-bit grey PNG": folder / "g16.png", "32-bit float TIFF": folder / "f.tif",
             "palette PNG": folder / "p.png"}
    Image.fromarray(np.repeat((ramp * 65535).astype(np.uint16), h, 0)).save(paths["16-bit grey PNG"])
    Image.fromarray(np.repeat(ramp, h, 0)).save(paths["32-bit float TIFF"], compression="tiff_adobe_deflate")
    palette = Image.fromarray(np.repeat((ramp * 15).round().astype(np.uint8), h, 0)).convert("P")
    palette.save(paths["palette PNG"])
    cw, ch = colour_side, colour_side - 1
    colour = np.repeat(np.repeat((np.linspace(0, 1, cw)[None, :, None] * 4095).astype(np.uint16), ch, 0), 3, 2)
    paths["16-bit colour PNG (12-bit data)"] = folder / "c16.png"
    with paths["16-bit colour PNG (12-bit data)"].open("wb") as f:
        png.Writer(cw, ch, greyscale=False, bitdepth=16).write(f, colour.reshape(ch, -1))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=10000)
    parser.add_argument("--colour-side", type=int, default=3000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/upload-memory"))
    args = parser.parse_args()
    print("| upload | size | file MB | decoded MB (as counted) | RSS after import MB | peak RSS MB | analysed at | "
          "read s |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for name, path in write_inputs(args.folder, args.side, args.colour_side).items():
        done = subprocess.run([sys.executable, "-c", READ, str(path)], cwd=REPO, capture_output=True, text=True,
                              check=True, env={"PYTHONPATH": str(REPO)})
        before, peak, w, h, seconds = done.stdout.split()
        with Image.open(path) as im:
            from detecture.demo.uploads import decoded_bytes
            from detecture.images import is_deep_colour

            decoded = decoded_bytes(im, is_deep_colour(im)) / 2**20
            size = f"{im.width}x{im.height}"
        print(f"| {name} | {size} | {path.stat().st_size / 2**20:.1f} | {decoded:.0f} | {before} | {peak} | {w}x{h} | "
              f"{seconds} |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
