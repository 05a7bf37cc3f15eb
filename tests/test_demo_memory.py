"""The demo's memory is bounded by what it analyses: 16-bit, float and palette uploads are shrunk in their own pixel
format before any conversion, so no full-resolution float or RGBA copy is ever made, and an upload whose decoded
pixels exceed the budget is refused before decoding.

The process's peak resident memory (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) is compared with the
size of the decoded upload: the decoded image itself must be the only full-resolution copy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detecture.demo import uploads
from detecture.errors import InputError

W, H = 4800, 3200  # 15 MP: decoded 31 MB (16-bit), 61 MB (float), 15 MB (palette); float64 copies 123 MB
STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _peak_growth(call) -> int:
    """Bytes by which the process's resident memory peaked above its level before ``call``."""
    CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
    before = int(re.search(r"VmHWM:\s+(\d+)", STATUS.read_text()).group(1))
    call()
    return (int(re.search(r"VmHWM:\s+(\d+)", STATUS.read_text()).group(1)) - before) * 1024


def _gradient(dtype) -> np.ndarray:
    return np.broadcast_to(np.linspace(0, 1, W, dtype=np.float64)[None, :], (H, W)).astype(dtype)


def _sixteen_bit(path):
    Image.fromarray((_gradient(np.float64) * 65535).astype(np.uint16)).save(path)


def _float(path):
    Image.fromarray(_gradient(np.float32)).save(path)


def _palette(path):
    im = Image.fromarray(np.round(_gradient(np.float64) * 15).astype(np.uint8))
    im = im.convert("P")
    im.putpalette([17 * (i // 3) for i in range(16 * 3)])  # index i is grey level 17 i
    im.save(path)


@pytest.mark.parametrize("write,name,per_pixel", [(_sixteen_bit, "g16.png", 2), (_float, "f.tif", 4),
                                                  (_palette, "p.png", 1)])
def test_uploads_are_shrunk_before_any_full_resolution_copy(write, name, per_pixel, tmp_path):
    if not CLEAR_REFS.exists():
        pytest.skip("measures memory through Linux /proc")
    path = tmp_path / name
    write(path)
    uploads.load_upload(path, max_side=16)  # first calls load decoders and allocate pools: not what is measured
    decoded = W * H * per_pixel
    out = []
    growth = _peak_growth(lambda: out.append(uploads.load_upload(path, max_side=512)))
    image, original, _ = out[0]
    assert original == (H, W) and image.shape == (341, 512, 3) and image.dtype == np.uint8
    assert growth < 1.5 * decoded + 8 * 2**20, f"peak +{growth / 2**20:.0f} MB for {decoded / 2**20:.0f} MB decoded"
    assert image[:, 0].mean() < 40 and image[:, -1].mean() > 215  # the gradient survives: dark left, bright right


def test_an_upload_over_the_decoding_budget_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "f.tif"
    _float(path)
    monkeypatch.setattr(uploads, "MAX_DECODED_BYTES", 4 * W * H - 1)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(InputError, match=r"f.tif: 4800x3200 F pixels take 59 MB decoded; the demo decodes at most"):
        uploads.load_upload(path)


def test_a_16_bit_colour_upload_peaks_within_what_the_budget_counts_for_it(tmp_path):
    """Decoded at full depth, a 16-bit colour upload has several full-size copies; the budget counts
    DEEP_COLOUR_BYTES a pixel for it, which must cover the real peak."""
    import png

    w, h = 1500, 1000
    colour = np.broadcast_to((np.linspace(0, 1, w)[None, :, None] * 4095).astype(np.uint16), (h, w, 3))
    path = tmp_path / "c16.png"
    with path.open("wb") as f:
        png.Writer(w, h, greyscale=False, bitdepth=16).write(f, colour.reshape(h, -1))
    with Image.open(path) as im:
        counted = uploads.decoded_bytes(im, deep=True)
    growth = _peak_growth(lambda: uploads.load_upload(path, max_side=512))
    assert growth < counted, f"peak +{growth / 2**20:.0f} MB against {counted / 2**20:.0f} MB counted"
