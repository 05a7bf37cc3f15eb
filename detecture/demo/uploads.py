"""Reading an uploaded image for the demo within bounded memory, with errors a page can show as they are.

The pixel count and the memory the decoded pixels take are checked from the header before anything is decoded
(:data:`MAX_UPLOAD_PIXELS`, :data:`MAX_DECODED_BYTES`), JPEGs are decoded straight at a reduced scale
(``Image.draft``), and every image is shrunk to at most :data:`ANALYSIS_SIDE` px on its longer side in its own pixel
format (16-bit, float, palette) before any conversion: the full-resolution image exists once, as decoded, never as a
float or RGBA copy. A decompression bomb is refused before it expands, with the same message as any other image
over the pixel limit (Pillow's own guard fires first for the largest claims, inside ``Image.open``). Whose fault a
failed read is follows :func:`~detecture.utils.faults.is_input_fault`: a system error reading the upload is the
server's and propagates as the ``OSError`` it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import (MIN_SIDE, check_size, input_fault, is_deep_colour, keep_within_aspect, read_deep_colour,
                      stored_frame, to_rgb, upright)
from ..utils.faults import DECODE_ERRORS, is_input_fault

MAX_UPLOAD_PIXELS = 100_000_000
MAX_DECODED_BYTES = 400 * 2**20  # e.g. 100 MP of 8-bit RGB(A) or 32-bit float grey, 200 MP of 16-bit grey
ANALYSIS_SIDE = 1024


# A 16-bit colour upload's peak per pixel, decoded at full depth (detecture.images.read_deep_colour): Pillow's own
# 8-bit copy (the EXIF read decodes a PNG), the 16-bit pixels, their float32 rescaling and the 8-bit result: 24 at
# 9 MP in perf/RESULTS.md ("Demo upload memory"), more on a small image, where fixed costs weigh more.
DEEP_COLOUR_BYTES = 40


def decoded_bytes(im: Image.Image, deep: bool = False) -> int:
    """Memory decoding takes: Pillow stores 3-band and 2-band images in 4 bytes per pixel; a 16-bit colour file
    (``deep``, :func:`~detecture.images.is_deep_colour`) takes :data:`DEEP_COLOUR_BYTES`."""
    if deep:
        return im.width * im.height * DEEP_COLOUR_BYTES
    per_pixel = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    return im.width * im.height * per_pixel


def analysis_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(W, H) to analyse a ``width`` x ``height`` image at: at most ``max_side`` px on the longer side. A thin strip
    keeps the MIN_SIDE px the size rule asks of any image rather than round to a single row, and a strip within the
    detecture methods' :data:`~detecture.images.MAX_ASPECT` stays within it (rounding 10 x 2000 px to 5 x 1024 would
    not)."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    shrunk = max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale))
    return keep_within_aspect((width, height), shrunk)


def shrink_native(im: Image.Image, max_side: int) -> Image.Image:
    """``im`` at its :func:`analysis_size`, resampled in its own mode (palette indices by nearest neighbour, since
    they cannot be averaged), so later conversions only ever copy the small image."""
    size = analysis_size(im.width, im.height, max_side)
    if size == im.size:
        return im
    if im.mode in ("P", "PA", "1"):
        return im.resize(size, Image.Resampling.NEAREST)
    # Pillow's reduce() step has no 16-bit integer kernel; the plain resize does.
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=None if im.mode.startswith("I;16") else 2.0)


def too_many_pixels(name: str, pixels: int, size: tuple[int, int] | None = None) -> InputError:
    """The refusal of an upload over :data:`MAX_UPLOAD_PIXELS`; ``size`` (W, H) when the header could be read."""
    what = f"{size[0]}x{size[1]} is" if size else "its header claims"
    return InputError(f"{name}: {what} {pixels / 1e6:.0f} MP; the demo accepts up to "
                      f"{MAX_UPLOAD_PIXELS // 1_000_000} MP")


def load_upload(path: str | Path, name: str | None = None, max_side: int = ANALYSIS_SIDE,
                check_shape: Callable[[str, int, int], None] = check_size) -> tuple[np.ndarray, tuple[int, int], dict]:
    """(analysis image (h, w, 3) uint8, original (H, W), :func:`~detecture.images.stored_frame`) of an uploaded
    file; :class:`InputError` if unusable. The image and the original size are upright (the EXIF orientation
    applied: Gradio hands the app the file as uploaded); the frame says how they relate to the stored pixels, as
    the CLI's records do. ``check_shape`` (name, width, height) refuses, from the header, a shape the analysis
    would refuse, judged on the size the user uploaded rather than the shrunk one: the engine gives it the
    service's rules for its request (:func:`~detecture.service.check_image`, which knows which methods refuse a
    strip); the default checks the size every method needs."""
    name = name or Path(path).name
    try:
        with Image.open(path) as im:
            width, height = im.size
            deep = is_deep_colour(im)  # before the EXIF read, which loads a PNG (and then its tile is gone)
            frame = stored_frame(im, name)
            orientation = frame["exif_orientation"]
            if orientation in (5, 6, 7, 8):  # EXIF says the picture is shown rotated by 90°
                width, height = height, width
            if width * height > MAX_UPLOAD_PIXELS:
                raise too_many_pixels(name, width * height, (width, height))
            check_shape(name, width, height)
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is enough
            decoded = decoded_bytes(im, deep)
            if decoded > MAX_DECODED_BYTES:
                raise InputError(f"{name}: {width}x{height} {im.mode} pixels take {decoded / 2**20:.0f} MB "
                                 f"decoded; the demo decodes at most {MAX_DECODED_BYTES // 2**20} MB per image")
            if deep:  # 16-bit colour: Pillow alone would keep each channel's high byte only
                image = shrink_native(upright(read_deep_colour(path, im, name), orientation), max_side)
            else:
                im.load()
                image = to_rgb(upright(shrink_native(im, max_side), orientation), name)
    except Image.DecompressionBombError as exc:  # says only "Image size (N pixels) exceeds limit ..."
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        raise too_many_pixels(name, int(claimed.group(1)) if claimed else 2 * Image.MAX_IMAGE_PIXELS) from None
    except DECODE_ERRORS as exc:
        if not is_input_fault(exc):
            raise
        raise InputError(f"{name}: {input_fault(exc, 'image')}") from None
    return np.asarray(image), (height, width), frame
