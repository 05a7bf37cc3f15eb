"""Robust image loading: every odd-but-valid image becomes 8-bit RGB; a broken one raises an error naming the file.

Handles EXIF orientation (:func:`exif_orientation`: unreadable EXIF is ignored with a warning, since the pixels
are fine), greyscale, palette, alpha (composited on white so transparent areas do not turn black),
and 16-bit / float images (rescaled to 8 bits by their own range, since e.g. 16-bit PNGs rarely use the full range;
NaN or infinite pixels are refused). Pillow has no 16-bit colour modes and would keep only the high byte of a
16-bit colour PNG or TIFF (a 12-bit camera's data would come out nearly black), so those are decoded at full depth by
``pypng`` and ``tifffile`` (:func:`read_deep_colour`). Arrays passed to the API follow the same rules
(:func:`as_rgb_array`). Every input image file (photo, mask, label map) is opened through :func:`open_image`, which
decides what a bad file is.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .utils.faults import DECODE_ERRORS, is_input_fault

logger = logging.getLogger(__name__)

# Decompression-bomb guard stays on but is raised to allow large scientific images (~ 30k x 30k): Pillow warns above
# this many pixels and refuses twice as many before decoding anything.
Image.MAX_IMAGE_PIXELS = 1_000_000_000
# Per axis, for every input form: a texture is a pattern across both axes, which one row or column of pixels cannot
# show. A rule of what is an image to segment, not of what a model needs: both methods also run on a 1-pixel axis.
MIN_SIDE = 2
MAX_ASPECT = 200  # longer side / shorter side Qwen3-VL's image processor accepts (its smart_resize)
# Where a refusal of a strip points the user on the command line; the demo's page words it as its own choice.
CLASSICAL_OPTION = "--method classical accepts it"
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose applies it).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def check_size(name: str | os.PathLike, width: int, height: int) -> None:
    """Raise :class:`InputError` naming ``name`` when the image is smaller than ``MIN_SIDE`` on either axis."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(f"{name}: image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} pixels are needed")


def within_aspect(width: int, height: int) -> bool:
    """Whether neither side is more than :data:`MAX_ASPECT` times the other (the sides in either order)."""
    return max(width, height) <= MAX_ASPECT * min(width, height)


def keep_within_aspect(original: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """``size``, a shrunk copy of an image of size ``original`` (both in one axis order), with its long side cut
    where rounding stretched it past :data:`MAX_ASPECT` while the original was within: what the up-front shape check
    accepted must stay readable (72 x 14400 shrunk to 71 x 14255 would be 200.8:1)."""
    if not within_aspect(*original):
        return size
    return tuple(min(side, MAX_ASPECT * min(size)) for side in size)


def check_aspect(name: str | os.PathLike, width: int, height: int, alternative: str = CLASSICAL_OPTION) -> None:
    """Raise :class:`InputError` naming ``name`` when one side is more than :data:`MAX_ASPECT` times the other:
    Qwen3-VL's image processor refuses such a strip, so the detecture method cannot read it (the classical one can).
    ``alternative`` points at the classical method in the caller's words (an option on the command line, a choice
    on the demo's page).
    """
    if not within_aspect(width, height):
        raise InputError(f"{name}: image is {width}x{height}, one side more than {MAX_ASPECT} times the other, which "
                         f"the detecture method's vision model refuses ({alternative})")


def exif_orientation(im: Image.Image, name: str | os.PathLike) -> int:
    """The EXIF orientation of ``im`` (1..8; 1 = stored upright), the one rule every reader of photos follows.

    Cameras and editors write malformed EXIF (a tag of the wrong type, a truncated block) in files whose pixels are
    fine; Pillow's ``ImageOps.exif_transpose`` then fails while re-encoding the whole block. Only the orientation tag
    is read here, and when it cannot be read, or holds no valid orientation, the image is used as stored, with a
    warning naming the file: a picture shown unrotated is more useful than none. A system error (I/O) still
    propagates, to be judged by :func:`open_image`.
    """
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as exc:  # Pillow's EXIF parser raises many types (struct.error, TypeError...) on malformed data
        if isinstance(exc, OSError) and not is_input_fault(exc):
            raise
        logger.warning("%s: unreadable EXIF metadata (%s); the image is used as stored, without rotation", name, exc)
        return 1
    if value != 1 and value not in UPRIGHT:
        logger.warning("%s: EXIF orientation %r is not one of 1..8; the image is used as stored, without rotation",
                       name, value)
        return 1
    return int(value)


def stored_frame(im: Image.Image, name: str | os.PathLike) -> dict:
    """How the upright picture of the open file ``im`` (the frame of every mask Detecture writes) relates to the
    file as stored: ``exif_orientation`` (:func:`exif_orientation`; 1..8, 1 = no change) and ``stored_size`` ([H, W]
    on disk, what ``np.array(Image.open(path))`` holds). Every reader of an image whose record carries the frame (the
    CLI's :func:`load_image_and_frame`, the demo's upload reader) takes it from here, so the records agree;
    :func:`to_stored_frame` maps back."""
    return {"exif_orientation": exif_orientation(im, name), "stored_size": [im.height, im.width]}


def upright(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` as it is meant to be shown, given its :func:`exif_orientation`."""
    return im.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else im


def to_stored_frame(array: np.ndarray, orientation: int) -> np.ndarray:
    """An (H, W, ...) array in the upright frame (a mask or label map Detecture wrote for a photo with this EXIF
    ``orientation``) turned back to the frame of the file's stored pixels: the inverse of :data:`UPRIGHT`."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, 1)
    if orientation == 7:
        return np.rot90(array, 2).swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, -1)
    return array


def to_rgb(image: Image.Image, name: str | os.PathLike = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see module docstring for the rules); :class:`InputError` naming ``name``
    for float pixels that are NaN or infinite, which no grey level stands for."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        grey = rescale_by_range(np.asarray(image, dtype=np.float64), name)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
    if image.mode in ("RGBA", "RGBa", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def is_deep_colour(im: Image.Image) -> bool:
    """Whether ``im`` holds 16-bit colour (or grey + alpha) pixels, which Pillow would decode by dropping each
    channel's low byte: it opens such a file as RGB, RGBA or LA. Ask before anything loads the pixels (reading a
    PNG's EXIF does), since only the undecoded file says how deep they are."""
    args = im.tile[0].args if im.tile else None
    rawmode = args if isinstance(args, str) else (args[0] if args else "")
    return im.mode in ("RGB", "RGBA", "LA") and ";16" in str(rawmode)


def read_deep_colour(path: str | os.PathLike, im: Image.Image, name: str | os.PathLike) -> Image.Image:
    """The 8-bit RGB image of a 16-bit colour PNG or TIFF (:func:`is_deep_colour`) decoded at full depth: colour
    rescaled by its own range as other deep pixels are (:func:`rescale_by_range`), alpha scaled by the depth the
    file declares (an opaque image stays opaque) and composited on white by :func:`to_rgb`. A decoding error is a
    ``ValueError``, which :func:`open_image` reports as the file's fault."""
    pixels, opaque = _deep_pixels(path, im.format)
    colour, alpha = (pixels[..., :-1], pixels[..., -1]) if pixels.shape[2] in (2, 4) else (pixels, None)
    rgb = rescale_by_range(colour, name)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if alpha is None:
        return Image.fromarray(rgb)
    rgba = np.dstack([rgb, np.round(alpha * (255.0 / opaque)).astype(np.uint8)])
    return to_rgb(Image.fromarray(rgba, mode="RGBA"), name)


def _deep_pixels(path: str | os.PathLike, image_format: str | None) -> tuple[np.ndarray, int]:
    """(H, W, channels) uint16 pixels of a 16-bit colour PNG (``pypng``) or TIFF (``tifffile``, first page), and the
    value that stands for fully opaque: ``pypng`` brings a PNG's pixels down to the depth its ``sBIT`` chunk declares
    (4095 for 12-bit data)."""
    if image_format == "PNG":
        import png

        try:
            width, height, rows, info = png.Reader(filename=os.fspath(path)).asDirect()
            pixels = np.empty((height, width * info["planes"]), dtype=np.uint16)
            for y, row in enumerate(rows):  # row by row: the rows are never all held as Python arrays at once
                pixels[y] = row
        except (png.Error, zlib.error) as exc:
            raise ValueError(str(exc)) from exc
        return pixels.reshape(height, width, info["planes"]), 2 ** info["bitdepth"] - 1
    if image_format == "TIFF":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            pixels, axes = page.asarray(), page.axes
        if axes not in ("YXS", "SYX"):
            raise ValueError(f"16-bit colour TIFF with axes {axes}; expected one image of Y, X and samples")
        return (np.moveaxis(pixels, 0, -1) if axes == "SYX" else pixels), np.iinfo(np.uint16).max
    raise ValueError(f"16-bit colour {image_format} files are not supported; save it as a 16-bit PNG or TIFF")


def check_finite(values: np.ndarray, name: str | os.PathLike) -> None:
    """Raise :class:`InputError` naming ``name`` when float ``values`` hold NaN or infinity (a float TIFF's missing
    data, say): cast or rescaled they would turn into arbitrary or black pixels; the same rule for files and arrays."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(f"{name}: contains NaN or infinite values")


def rescale_by_range(values: np.ndarray, name: str | os.PathLike) -> np.ndarray:
    """Deep pixels (16-bit, 32-bit, float) as uint8, their lowest value at 0 and their highest at 255: such data
    rarely spans its type's range (a 16-bit PNG of a 12-bit sensor), so scaling by the type would leave it dark. The
    one rule for 16-bit and float files and for integer arrays beyond 8 bits."""
    check_finite(values, name)
    # float32 holds every 16-bit value exactly at half float64's memory; wider data keeps float64's range
    work = np.float32 if values.dtype.kind in "biu" and values.dtype.itemsize <= 2 else np.float64
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    scaled = values.astype(work)
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    return np.rint(scaled, out=scaled).astype(np.uint8)


@contextmanager
def open_image(path: str | os.PathLike, what: str = "image") -> Iterator[Image.Image]:
    """Open an input image file lazily; the caller decodes it inside the block.

    A fault of the input (:func:`~detecture.utils.faults.is_input_fault`: the path is no usable file, the format is
    unknown or corrupt, or the header claims more pixels than the decompression-bomb guard allows) raises
    :class:`InputError` naming the file and ``what`` it should have been, which a batch run records as that item's
    failure. Any other ``OSError`` (I/O error, permission) is the system's and propagates unchanged, so the run stops
    unfinished rather than record a good file as bad. A pipe, socket or device is refused before it is opened:
    reading a named pipe without a writer would wait forever.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # Image.open below reports it, judged by is_input_fault
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device), cannot be read as {what}")
    try:
        with Image.open(path) as im:
            yield im
    except DECODE_ERRORS as exc:
        if not is_input_fault(exc):
            raise
        raise InputError(f"{path}: {input_fault(exc, what)}") from None


def input_fault(exc: BaseException, what: str) -> str:
    """What is wrong with a file whose opening or decoding raised ``exc``, an input fault: the one wording every
    image reader (files, uploads) gives."""
    if isinstance(exc, UnidentifiedImageError):
        return f"not a readable {what} (unknown or corrupt format)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"refused as a possible decompression bomb ({exc})"
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return f"{what} not found (no such file)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot be read as {what} ({exc.strerror})"
    return f"corrupt or truncated {what} ({exc})"


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB image, or raise :class:`InputError` saying what is wrong with it.

    An animated GIF (or any multi-frame file) is read at its first frame, as Pillow opens it: a texture segmentation
    is of one picture, and the first is the one a viewer shows before it plays."""
    return load_image_and_frame(path)[0]


def load_image_and_frame(path: str | os.PathLike) -> tuple[Image.Image, dict]:
    """:func:`load_image`, and its :func:`stored_frame`, read in the same pass."""
    with open_image(path) as im:
        if is_deep_colour(im):
            image = read_deep_colour(path, im, path)
        else:
            im.load()
            image = to_rgb(im, path)
        frame = stored_frame(im, path)
        image = upright(image, frame["exif_orientation"])
    check_size(path, image.width, image.height)
    return image, frame


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a PIL image or array (greyscale arrays are repeated over channels).

    Arrays follow the files' rules: uint8 is used as is; integer arrays with values above 255 (16-bit data) are
    rescaled by their own range, like 16-bit files (:func:`rescale_by_range`); floats in [0, 1] are scaled to 0-255,
    other values clipped to it. An (H, W, 4) array is RGBA and composited on white by :func:`to_rgb`, as an RGBA
    file or PIL image is, so a transparent area is white whichever form it came in. :class:`InputError` for arrays
    that are no image: too small, not real numbers, or holding NaN or infinite values (:func:`check_finite`)."""
    if isinstance(image, Image.Image):
        check_size("PIL image", image.width, image.height)
        return np.asarray(to_rgb(image, "PIL image"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"expected an (H, W, 3) image array, got shape {arr.shape}")
    check_size("image array", arr.shape[1], arr.shape[0])
    if arr.dtype.kind not in "biuf":
        raise InputError(f"image array: expected real numbers, got dtype {arr.dtype}")
    check_finite(arr, "image array")
    rgb = _array_to_uint8(arr[:, :, :3])
    if arr.shape[2] == 3:
        return rgb
    alpha = arr[:, :, 3]
    if alpha.dtype.kind in "iu" and alpha.max() > 255:
        alpha = alpha / 65535.0  # 16-bit opacity; rescaling by its own range would make an opaque image transparent
    rgba = np.dstack([rgb, _array_to_uint8(alpha)])
    return np.asarray(to_rgb(Image.fromarray(rgba), "image array"))


def _array_to_uint8(values: np.ndarray) -> np.ndarray:
    """The channels of a finite real array as uint8, by the rules :func:`as_rgb_array` states."""
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind in "iu" and values.max() > 255:
        return rescale_by_range(values, "image array")
    return np.clip(values * (255.0 if values.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)


def resize_linear(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 by two-tap bilinear interpolation without antialiasing, pixel centres
    aligned (source x = (x + 0.5) * W / size - 0.5, clamped at the edges), rounded to the nearest integer.

    This is the equation of OpenCV's ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``, which the published
    Detecture used for both of its models; OpenCV evaluates it in 11-bit fixed point, so its output can differ from
    this one by 1 grey level. Large downscales alias (no low-pass filter), exactly as in the published pipeline.
    """
    import torch
    import torch.nn.functional as F

    if image.shape[:2] == (size, size):
        return image
    pixels = torch.from_numpy(np.array(image, dtype=np.float64)).permute(2, 0, 1)[None]
    out = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
