"""Tests for imagic_steps.images: every input mode ends up as correct 8-bit RGB, and every bad file
becomes a one-line ImageError naming the file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from imagic_steps.images import (
    MAX_PIXELS,
    MIN_SIDE,
    ImageError,
    load_image,
    open_rgb,
    pil_to_tensor,
    resize_center_crop,
    tensor_to_pil,
)

WHITE = (255, 255, 255)


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def _stored_mode(path) -> str:
    with Image.open(path) as image:
        return image.mode


def _png_rgb16(path, width: int, height: int, rgb16: tuple[int, int, int]):
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + struct.pack(">HHH", *rgb16) * width  # filter byte 0, then big-endian samples
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
    return path


# --- transparency -------------------------------------------------------------------------------


def test_rgba_transparent_region_becomes_white(tmp_path):
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 32, 64))  # fully transparent black on the left half
    rgb = open_rgb(_save(image, tmp_path / "rgba.png"))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((5, 5)) == WHITE
    assert rgb.getpixel((50, 5)) == (255, 0, 0)


def test_la_transparent_region_becomes_white(tmp_path):
    image = Image.new("LA", (64, 64), (40, 255))
    image.paste((0, 0), (0, 0, 32, 64))
    rgb = open_rgb(_save(image, tmp_path / "la.png"))
    assert rgb.getpixel((5, 5)) == WHITE
    assert rgb.getpixel((50, 5)) == (40, 40, 40)


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # index 0 black, index 1 blue
    image.paste(1, (32, 0, 64, 64))
    rgb = open_rgb(_save(image, tmp_path / "p.png", transparency=0))
    assert rgb.getpixel((5, 5)) == WHITE
    assert rgb.getpixel((50, 5)) == (0, 0, 255)


# --- colour modes ---------------------------------------------------------------------------------


def test_greyscale_becomes_equal_rgb(tmp_path):
    rgb = open_rgb(_save(Image.new("L", (64, 64), 100), tmp_path / "l.png"))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((10, 10)) == (100, 100, 100)


def test_palette_colours_preserved(tmp_path):
    image = Image.new("P", (64, 64), 0)
    image.putpalette([10, 200, 30, 250, 20, 90] + [0] * (254 * 3))
    image.paste(1, (32, 0, 64, 64))
    rgb = open_rgb(_save(image, tmp_path / "p.png"))
    assert rgb.getpixel((5, 5)) == (10, 200, 30)
    assert rgb.getpixel((50, 5)) == (250, 20, 90)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_becomes_rgb(tmp_path, suffix):
    # Pure cyan + full yellow ink is green in naive CMYK -> RGB.
    image = Image.new("CMYK", (64, 64), (255, 0, 255, 0))
    path = _save(image, tmp_path / f"cmyk{suffix}")
    assert _stored_mode(path) == "CMYK"
    rgb = open_rgb(path)
    assert rgb.mode == "RGB"
    assert np.abs(np.array(rgb.getpixel((32, 32))) - (0, 255, 0)).max() <= 8


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    values = np.zeros((64, 64), dtype=np.uint16)
    values[:, :16] = 65535
    values[:, 16:32] = 32768
    values[:, 32:48] = 1000  # would stay 255 if PIL's clipping conversion were used
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    path = _save(image, tmp_path / "grey16.png")
    rgb = open_rgb(path)
    assert rgb.getpixel((5, 5)) == (255, 255, 255)
    assert rgb.getpixel((20, 5)) == (128, 128, 128)
    assert rgb.getpixel((40, 5)) == (4, 4, 4)
    assert rgb.getpixel((60, 5)) == (0, 0, 0)


def test_16bit_greyscale_mode_i_is_scaled(tmp_path):
    # 16-bit PGM files open in mode "I".
    values = np.full((64, 64), 32768, dtype=">u2")
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5\n64 64\n65535\n" + values.tobytes())
    assert _stored_mode(path) == "I"
    assert open_rgb(path).getpixel((5, 5)) == (128, 128, 128)


def test_16bit_rgb_png_is_scaled(tmp_path):
    path = _png_rgb16(tmp_path / "rgb16.png", 64, 64, (65535, 32768, 0))
    assert open_rgb(path).getpixel((5, 5)) == (255, 128, 0)


# --- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("orientation, red_corner", [(6, "right"), (8, "left")])
def test_exif_orientation_applied(tmp_path, orientation, red_corner):
    image = Image.new("RGB", (80, 120), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 80, 30))  # red band across the top of the stored pixels
    exif = Image.Exif()
    exif[274] = orientation
    rgb = open_rgb(_save(image, tmp_path / "rotated.jpg", exif=exif, quality=95))

    assert rgb.size == (120, 80)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the top band moves to the right.
    red_x, blue_x = (110, 10) if red_corner == "right" else (10, 110)
    red, blue = np.array(rgb.getpixel((red_x, 40))), np.array(rgb.getpixel((blue_x, 40)))
    assert red[0] > 200 and red[2] < 50
    assert blue[2] > 200 and blue[0] < 50


# --- resizing ----------------------------------------------------------------------------------


def test_resize_center_crop_keeps_centre():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (140, 0, 160, 100))  # red stripe in the middle of a wide image
    square = resize_center_crop(image, 64)
    assert square.size == (64, 64)
    assert square.getpixel((32, 32)) == (255, 0, 0)
    assert square.getpixel((0, 32)) == (0, 0, 255)  # the sides are blue, not the cropped-off edges


def test_resize_center_crop_tall_image():
    image = Image.new("RGB", (100, 301), (0, 0, 255))
    image.paste((255, 0, 0), (0, 140, 100, 161))
    square = resize_center_crop(image, 48)
    assert square.size == (48, 48)
    assert square.getpixel((24, 24)) == (255, 0, 0)


def test_load_image_returns_square_rgb(tmp_path):
    path = _save(Image.new("L", (200, 100), 77), tmp_path / "wide.png")
    image = load_image(path, 64)
    assert image.mode == "RGB"
    assert image.size == (64, 64)
    assert image.getpixel((10, 10)) == (77, 77, 77)


@pytest.mark.parametrize("resolution", [60, 0, -8])
def test_load_image_rejects_resolution_not_multiple_of_8(tmp_path, resolution):
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "ok.png")
    with pytest.raises(ValueError, match="multiple of 8"):
        load_image(path, resolution)


def test_load_image_passes_limits(tmp_path):
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "ok.png")
    with pytest.raises(ImageError, match="limit"):
        load_image(path, 64, max_pixels=1000)


# --- tensors ---------------------------------------------------------------------------------


def _random_rgb(width: int = 40, height: int = 24) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = 0, 255  # make sure both ends of the range are present
    return Image.fromarray(pixels)


def test_pil_to_tensor_shape_dtype_range():
    tensor = pil_to_tensor(_random_rgb())
    assert tensor.shape == (1, 3, 24, 40)
    assert tensor.dtype == torch.float32
    assert tensor.min().item() == -1.0
    assert tensor.max().item() == 1.0


def test_pil_to_tensor_channel_order():
    tensor = pil_to_tensor(Image.new("RGB", (8, 4), (255, 0, 0)))
    assert tensor[0, 0].eq(1.0).all() and tensor[0, 1:].eq(-1.0).all()


def test_pil_to_tensor_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        pil_to_tensor(Image.new("RGBA", (8, 8)))


def test_round_trip_is_exact():
    image = _random_rgb()
    (back,) = tensor_to_pil(pil_to_tensor(image))
    assert back.mode == "RGB"
    assert np.array_equal(np.array(back), np.array(image))


def test_tensor_to_pil_clamps_and_batches():
    images = torch.stack([torch.full((3, 4, 4), 5.0), torch.full((3, 4, 4), -5.0)])
    first, second = tensor_to_pil(images)
    assert first.getpixel((0, 0)) == WHITE
    assert second.getpixel((0, 0)) == (0, 0, 0)


def test_tensor_to_pil_rejects_wrong_shape():
    with pytest.raises(ValueError, match="B, 3, H, W"):
        tensor_to_pil(torch.zeros(3, 4, 4))


# --- errors ----------------------------------------------------------------------------------


def _write_truncated_png(path):
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)  # noise does not compress, so half the bytes is half the pixels
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "name, make, limits, word",
    [
        ("missing.png", lambda path: None, {}, "does not exist"),
        ("empty.png", lambda path: path.write_bytes(b""), {}, "empty"),
        ("notes.png", lambda path: path.write_text("not an image\n"), {}, "not a recognised image"),
        ("cut.png", _write_truncated_png, {}, "truncated or corrupt"),
        ("small.png", lambda path: Image.new("RGB", (32, 32)).save(path), {}, "smaller"),
        ("thin.png", lambda path: Image.new("RGB", (500, 40)).save(path), {}, "smaller"),
        ("bomb.png", lambda path: Image.new("RGB", (64, 64)).save(path), {"max_pixels": 1000}, "over the limit"),
    ],
)
def test_bad_files_raise_one_line_image_error(tmp_path, name, make, limits, word):
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageError) as caught:
        open_rgb(path, **limits)
    message = str(caught.value)
    assert name in message
    assert "\n" not in message
    assert word in message


@pytest.mark.parametrize("pil_limit", [1000, 3000])  # 4096 pixels: over 2x the limit errors, over 1x warns
def test_pil_decompression_bomb_becomes_image_error(tmp_path, monkeypatch, pil_limit):
    # PIL's own guard fires inside Image.open; it must surface as ImageError, not a warning or PIL error.
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "pilbomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    with pytest.raises(ImageError, match="too large"):
        open_rgb(path)


def test_image_error_is_value_error():
    assert issubclass(ImageError, ValueError)


def test_defaults():
    assert MAX_PIXELS == 64_000_000
    assert MIN_SIDE == 64
