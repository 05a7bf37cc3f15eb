"""Odd-but-valid images load as upright 8-bit RGB; broken ones raise an error that names the file."""

import errno

import numpy as np
import pytest
from PIL import Image

import detecture
from bench_fixture import write_bomb_png
from detecture.data.metadata import load_binary_mask
from detecture.errors import DetectureError, InputError
from detecture.images import load_image


def test_greyscale_rgba_palette_and_16bit_become_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((8, 9), 100, np.uint8)).save(grey)
    rgba = tmp_path / "rgba.png"
    arr = np.zeros((8, 9, 4), np.uint8)
    arr[..., 0] = 200
    arr[..., 3] = 0  # fully transparent: composited on white, not black
    Image.fromarray(arr, "RGBA").save(rgba)
    pal = tmp_path / "pal.png"
    Image.fromarray(np.full((8, 9, 3), 50, np.uint8)).convert("P").save(pal)
    deep = tmp_path / "deep.png"
    ramp = np.linspace(1000, 3000, 72).reshape(8, 9).astype(np.uint16)
    Image.fromarray(ramp).save(deep)
    for path in (grey, rgba, pal, deep):
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (9, 8)
    assert np.all(np.asarray(load_image(rgba)) == 255)
    deep_rgb = np.asarray(load_image(deep))[..., 0]
    assert deep_rgb.min() == 0 and deep_rgb.max() == 255  # rescaled by its own range


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(path, exif=exif)
    assert load_image(path).size == (10, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_to_stored_frame_undoes_what_exif_transpose_does(tmp_path, orientation):
    """For every EXIF orientation: the stored frame (size and orientation) of the file, and a map from the upright
    picture (load_image, ImageOps.exif_transpose) back to the stored pixels."""
    from PIL import ImageOps

    from detecture.images import load_image_and_frame, to_stored_frame

    stored = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif)
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(np.asarray(load_image(path)), shown)
    assert load_image_and_frame(path)[1] == {"exif_orientation": orientation, "stored_size": [6, 10]}
    assert np.array_equal(to_stored_frame(shown, orientation), stored)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDRbroken"])
def test_corrupt_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="broken.png"):
        load_image(path)


def test_truncated_jpeg_names_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="cut.jpg"):
        load_image(path)


def test_missing_directory_and_degenerate_images(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)
    tiny = tmp_path / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tiny)
    with pytest.raises(InputError, match="dot.png"):
        load_image(tiny)


@pytest.mark.parametrize("image", [np.zeros((1, 5, 3), np.uint8), np.zeros((5, 1), np.uint8),
                                   Image.new("RGB", (1, 7))], ids=["array", "grey array", "PIL image"])
def test_images_in_memory_obey_the_same_size_rule_as_files(image):
    """A notebook's array or PIL image below 2 × 2 gets the one-line error a file gets, before any segmenter runs."""
    with pytest.raises(InputError, match="at least 2x2 pixels are needed"):
        detecture.segment(image, method="classical", k=2)


@pytest.mark.parametrize("array, problem", [
    (np.full((8, 8, 3), np.nan), "NaN or infinite"), (np.full((8, 8), np.inf), "NaN or infinite"),
    (np.zeros((8, 8, 3), complex), "real numbers"), (np.full((8, 8, 3), "a"), "real numbers")])
def test_arrays_that_are_not_images_are_refused_in_one_line(array, problem):
    with pytest.raises(InputError, match=problem):
        detecture.segment(array, method="classical", k=2)


def test_decompression_bomb_and_too_long_name_are_faults_of_the_file(tmp_path):
    bomb = write_bomb_png(tmp_path / "bomb.png")
    with pytest.raises(InputError, match="bomb.png: refused as a possible decompression bomb"):
        load_image(bomb)
    long_name = tmp_path / ("x" * 300 + ".png")
    with pytest.raises(InputError, match="File name too long"):
        load_image(long_name)


def test_an_io_error_is_the_systems_fault_not_the_files(tmp_path, monkeypatch):
    """An image or mask the disk fails to read must stop a batch run unfinished, never be recorded as a bad file."""
    def failing_open(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(Image, "open", failing_open)
    for read in (load_image, load_binary_mask):
        with pytest.raises(OSError, match="Input/output error") as info:
            read(tmp_path / "a.png")
        assert not isinstance(info.value, DetectureError)


def _jpeg_with_exif(path, entries: list[bytes]) -> None:
    """A 40x30 JPEG whose EXIF block (big-endian TIFF) holds exactly ``entries``."""
    import struct

    exif = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    Image.new("RGB", (40, 30), (120, 60, 30)).save(path, exif=b"Exif\0\0" + exif)


def test_malformed_exif_keeps_a_readable_orientation_and_otherwise_loads_the_image_as_stored(tmp_path, caplog):
    import struct

    from detecture.demo.uploads import load_upload

    rotate = struct.pack(">HHI2sxx", 0x0112, 3, 1, struct.pack(">H", 6))  # orientation 6, a SHORT as it should be
    odd = struct.pack(">HHI4s", 0x014E, 2, 4, b"cam\0")  # NumberOfInks (a SHORT tag) stored as text
    _jpeg_with_exif(tmp_path / "odd_tag.jpg", [rotate, odd])
    assert load_image(tmp_path / "odd_tag.jpg").size == (30, 40)  # Pillow's exif_transpose raised struct.error here
    assert load_upload(tmp_path / "odd_tag.jpg")[0].shape == (40, 30, 3)

    text = struct.pack(">HHI4s", 0x0112, 2, 2, b"6\0\0\0")  # orientation written as the text "6"
    _jpeg_with_exif(tmp_path / "text_orientation.jpg", [text])
    with caplog.at_level("WARNING", logger="detecture.images"):
        assert load_image(tmp_path / "text_orientation.jpg").size == (40, 30)
    assert "text_orientation.jpg: EXIF orientation '6' is not one of 1..8" in caplog.text


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_image_file_with_nan_or_infinite_pixels_names_the_file(tmp_path, bad):
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    values[2, 3] = bad
    path = tmp_path / "depth.tif"
    Image.fromarray(values, mode="F").save(path)
    with pytest.raises(InputError, match=r"depth\.tif: contains NaN or infinite values"):  # was an all-black image
        load_image(path)


def test_16_bit_arrays_and_files_are_rescaled_by_one_rule(tmp_path):
    from detecture.images import as_rgb_array

    values = np.linspace(1000, 40000, 72).reshape(8, 9).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    from_file = as_rgb_array(load_image(tmp_path / "deep.png"))
    from_array = as_rgb_array(values)  # was clipped to 255 everywhere: a white image
    assert np.array_equal(from_array, from_file) and from_array.min() == 0 and from_array.max() == 255


def test_rgba_arrays_pil_images_and_files_give_the_same_pixels(tmp_path):
    """Transparency is composited on white whatever form the image comes in (an array's alpha was dropped, so its
    transparent areas showed whatever colour they stored, often black)."""
    from detecture.service import as_image_array

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 0  # transparent, semi-transparent and opaque bands
    rgba[4:8, :, 3] = 128
    rgba[8:, :, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    from_file = as_image_array(tmp_path / "rgba.png")
    assert np.all(from_file[:4] == 255)
    for other in (Image.fromarray(rgba), rgba, rgba.astype(np.float32) / 255):  # the last as plt.imread gives it
        assert np.array_equal(as_image_array(other), from_file)
    opaque_16bit = np.dstack([rgba[..., :3].astype(np.uint16) * 100, np.full((12, 10), 65535, np.uint16)])
    assert np.array_equal(as_image_array(opaque_16bit), as_image_array(opaque_16bit[..., :3]))


def test_a_pil_image_with_premultiplied_alpha_becomes_rgb():
    from detecture.images import as_rgb_array

    image = Image.new("LA", (4, 3), (100, 255)).convert("La")
    assert as_rgb_array(image).shape == (3, 4, 3)  # was a ValueError from Pillow's conversion


def test_a_named_pipe_is_refused_instead_of_waiting_for_a_writer(tmp_path):
    import os

    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    with pytest.raises(InputError, match=r"pipe\.png: not a regular file"):
        load_image(pipe)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_colour_files_keep_their_low_bits(tmp_path, suffix, channels):
    """12-bit camera data in a 16-bit colour file: Pillow alone keeps each channel's high byte (16 dark levels);
    loaded at full depth it is rescaled by its own range like 16-bit grey, and a full 16-bit alpha is opaque. The
    same pixels come through a demo upload."""
    import png
    import tifffile

    from detecture.demo.uploads import load_upload

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 4096, (20, 30, 3)).astype(np.uint16)
    pixels = np.dstack([colour, np.full((20, 30), 65535, np.uint16)]) if channels == 4 else colour
    path = tmp_path / f"camera{suffix}"
    if suffix == ".png":
        with path.open("wb") as f:
            png.Writer(30, 20, greyscale=False, alpha=channels == 4, bitdepth=16).write(f, pixels.reshape(20, -1))
    else:
        tifffile.imwrite(path, pixels, photometric="rgb", extrasamples=["unassalpha"] if channels == 4 else None)
    lo, hi = colour.min(), colour.max()
    expected = np.round((colour - float(lo)) / (hi - lo) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(path)), expected)
    assert np.array_equal(load_upload(path)[0], expected)


def test_an_opaque_12_bit_png_with_alpha_stays_opaque(tmp_path):
    """A 12-bit camera's PNG is stored as 16 bits with an sBIT chunk saying 12: its alpha of 4095 is opaque, not
    4095 / 65535 of it (the white background would show through)."""
    import png

    rng = np.random.default_rng(1)
    colour = rng.integers(0, 4096, (20, 30, 3)).astype(np.uint16)
    pixels = np.dstack([colour, np.full((20, 30), 4095, np.uint16)])
    path = tmp_path / "camera12.png"
    with path.open("wb") as f:
        png.Writer(30, 20, greyscale=False, alpha=True, bitdepth=12).write(f, pixels.reshape(20, -1))
    lo, hi = colour.min(), colour.max()
    expected = np.round((colour - float(lo)) / (hi - lo) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(path)), expected)


def test_a_corrupt_16_bit_colour_png_names_the_file(tmp_path):
    import png

    path = tmp_path / "broken.png"
    with path.open("wb") as f:
        png.Writer(30, 20, greyscale=False, bitdepth=16).write(f, np.zeros((20, 90), np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[:60] + bytes(40) + data[100:])
    with pytest.raises(InputError, match=r"broken\.png: "):
        load_image(path)
