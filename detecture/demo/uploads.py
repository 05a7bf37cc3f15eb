"""Reading an uploaded image for the demo within bounded memory, with errors a page can show as they are.

The pixel count is checked from the header before anything is decoded, JPEGs are decoded straight at a reduced
scale (``Image.draft``), and every image is analysed at most :data:`ANALYSIS_SIDE` px on its longer side, so a 40-MP
upload costs a few hundred MB at most and a decompression bomb is refused before it expands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..images import to_rgb

MAX_UPLOAD_PIXELS = 100_000_000
ANALYSIS_SIDE = 1024


def load_upload(path: str | Path, name: str | None = None,
                max_side: int = ANALYSIS_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """(analysis image (h, w, 3) uint8, original (H, W)) of an uploaded file; :class:`InputError` if unusable."""
    name = name or Path(path).name
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF says the picture is shown rotated by 90°
                width, height = height, width
            if width * height > MAX_UPLOAD_PIXELS:
                raise InputError(f"{name}: {width}x{height} is {width * height / 1e6:.0f} MP; the demo accepts up "
                                 f"to {MAX_UPLOAD_PIXELS // 1_000_000} MP")
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
            im.load()
            image = to_rgb(ImageOps.exif_transpose(im) or im)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{name}: corrupt or truncated image ({exc})") from None
    if image.width < 2 or image.height < 2:
        raise InputError(f"{name}: image is {image.width}x{image.height}; at least 2x2 pixels are needed")
    return np.asarray(image), (height, width)
