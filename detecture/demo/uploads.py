"""Reading an uploaded image for the demo within bounded memory, with errors a page can show as they are.

The pixel count and the memory the decoded pixels take are checked from the header before anything is decoded
(:data:`MAX_UPLOAD_PIXELS`, :data:`MAX_DECODED_BYTES`), JPEGs are decoded straight at a reduced scale
(``Image.draft``), and every image is shrunk to at most :data:`ANALYSIS_SIDE` px on its longer side in its own pixel
format (16-bit, float, palette) before any conversion: the full-resolution image exists once, as decoded, never as a
float or RGBA copy. A decompression bomb is refused before it expands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..images import check_size, exif_orientation, to_rgb, upright

MAX_UPLOAD_PIXELS = 100_000_000
MAX_DECODED_BYTES = 400 * 2**20  # e.g. 100 MP of 8-bit RGB(A) or 32-bit float grey, 200 MP of 16-bit grey
ANALYSIS_SIDE = 1024


def decoded_bytes(im: Image.Image) -> int:
    """Memory Pillow takes for the decoded pixels (it stores 3-band and 2-band images in 4 bytes per pixel)."""
    per_pixel = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    return im.width * im.height * per_pixel


def shrink_native(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` at most ``max_side`` px on its longer side, resampled in its own mode (palette indices by nearest
    neighbour, since they cannot be averaged), so later conversions only ever copy the small image."""
    if max(im.size) <= max_side:
        return im
    scale = max_side / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    if im.mode in ("P", "PA", "1"):
        return im.resize(size, Image.Resampling.NEAREST)
    # Pillow's reduce() step has no 16-bit integer kernel; the plain resize does.
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=None if im.mode.startswith("I;16") else 2.0)


def load_upload(path: str | Path, name: str | None = None,
                max_side: int = ANALYSIS_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """(analysis image (h, w, 3) uint8, original (H, W)) of an uploaded file; :class:`InputError` if unusable."""
    name = name or Path(path).name
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = exif_orientation(im, name)
            if orientation in (5, 6, 7, 8):  # EXIF says the picture is shown rotated by 90°
                width, height = height, width
            if width * height > MAX_UPLOAD_PIXELS:
                raise InputError(f"{name}: {width}x{height} is {width * height / 1e6:.0f} MP; the demo accepts up "
                                 f"to {MAX_UPLOAD_PIXELS // 1_000_000} MP")
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
            if decoded_bytes(im) > MAX_DECODED_BYTES:
                raise InputError(f"{name}: {width}x{height} {im.mode} pixels take {decoded_bytes(im) / 2**20:.0f} MB "
                                 f"decoded; the demo decodes at most {MAX_DECODED_BYTES // 2**20} MB per image")
            im.load()
            small = shrink_native(im, max_side)
            image = to_rgb(upright(small, orientation), name)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{name}: corrupt or truncated image ({exc})") from None
    check_size(name, image.width, image.height)
    return np.asarray(image), (height, width)
