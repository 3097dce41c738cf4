"""Read any image a user may have and turn it into the model's input tensor.

`open_rgb` is the only place that touches image files. Whatever the file holds (alpha, palettes,
CMYK, 16-bit greyscale, an EXIF rotation), it returns an upright 8-bit RGB image, and every way the
file can be unusable becomes an `ImageError` with one line naming the file and the fix.

Tensors follow the diffusers convention: float32, channels first, values in [-1, 1].
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    import torch

MAX_PIXELS: int = 64_000_000
"""Largest accepted width * height of the file before resizing (decompression-bomb guard)."""

MIN_SIDE: int = 64
"""Smallest accepted width or height, in pixels."""

# What PIL raises while decoding a damaged file; it does not wrap all of them in OSError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)

# Greyscale modes with more than 8 bits per sample. PIL's own convert("L") clips these at 255.
_HIGH_BIT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

_WHITE = (255, 255, 255)


def open_rgb(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> Image.Image:
    """Read any image a user may have and return it as 8-bit RGB, EXIF orientation applied.

    Transparent pixels are composited on white; high-bit-depth greyscale is scaled down to 8 bits.
    An animated or multi-page file (GIF, APNG, WebP, TIFF, ...) is refused: which of its frames to edit is the
    user's choice, not ours.

    Args:
        path: the image file.
        max_pixels: largest accepted width * height of the file, checked before decoding.
        min_side: smallest accepted width or height, in pixels.

    Returns:
        A fully loaded RGB image, independent of the file (which is closed).

    Raises:
        ImageError: the file is missing, empty, not an image, truncated or corrupt, too large or too small, or
            holds more than one frame.
    """
    try:
        size_bytes = os.stat(path).st_size
    except FileNotFoundError:
        raise ImageError(f"image '{path}' does not exist; check the path") from None
    except OSError as error:
        raise _image_error(path, "cannot be read", error, "check the path and its permissions") from None
    if size_bytes == 0:
        raise ImageError(f"image '{path}' is empty (0 bytes); re-export or replace the file")

    # PIL signals oversized images through a global limit and a warning; make the warning an
    # exception here (locally) so an oversized file can never slip through as a mere log line.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except UnidentifiedImageError as error:
            raise _image_error(path, "is not a recognised image format", error, "convert it to PNG or JPEG") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _image_error(path, "is too large to decode safely", error, "downscale it first") from None
        except OSError as error:
            raise _image_error(path, "cannot be read", error, "check the path and its permissions") from None
        except ValueError as error:  # e.g. a PNG text chunk that decompresses past PIL's MAX_TEXT_CHUNK
            raise _image_error(path, "has a chunk too large to decode safely", error,
                               "re-export the image without metadata") from None

        with image:
            _check_size(path, image.size, max_pixels=max_pixels, min_side=min_side)
            _check_single_frame(path, image)
            try:
                # Image.open only parses the header; load() forces the full decode so damage shows up here.
                image.load()
                upright = ImageOps.exif_transpose(image)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise _image_error(path, "is too large to decode safely", error, "downscale it first") from None
            except _DECODE_ERRORS as error:
                raise _image_error(path, "is truncated or corrupt", error, "re-export or replace the file") from None

    try:
        return _to_rgb(upright)
    except ValueError as error:
        raise _image_error(path, f"has an unsupported colour mode {upright.mode}", error, "re-export it as RGB") from None


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size` (Lanczos) then centre-crop to size x size.

    Args:
        image: any PIL image, W x H pixels.
        size: side of the square output, in pixels; positive.

    Returns:
        A size x size image in the mode of `image`.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    width, height = image.size
    scale = size / min(width, height)
    # max() guards the short side against rounding below `size` for extreme aspect ratios.
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.LANCZOS)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike, resolution: int, **limits: int) -> Image.Image:
    """Read an image file as a resolution x resolution RGB image ready for `pil_to_tensor`.

    Args:
        path: the image file.
        resolution: output side in pixels; a positive multiple of 8 because the VAE downsamples by 8.
        **limits: `max_pixels` / `min_side`, passed to `open_rgb`.

    Raises:
        ValueError: `resolution` is not a positive multiple of 8.
        ImageError: the file is unusable (see `open_rgb`).
    """
    if resolution <= 0 or resolution % 8:
        raise ValueError(f"resolution must be a positive multiple of 8 (the VAE downsamples by 8), got {resolution}")
    return resize_center_crop(open_rgb(path, **limits), resolution)


def pil_to_tensor(image: Image.Image) -> "torch.Tensor":
    """Convert an RGB image of W x H pixels to a (1, 3, H, W) float32 tensor with values in [-1, 1]."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}; read files with open_rgb or load_image")
    import torch  # imported here so that image checks and montages do not pay for torch

    pixels = torch.from_numpy(np.array(image, dtype=np.float32))  # (H, W, 3) in [0, 255]
    return (pixels / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_pil(images: "torch.Tensor") -> list[Image.Image]:
    """Convert a (B, 3, H, W) tensor with values in [-1, 1] to B RGB images; out-of-range values are clamped."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
    import torch

    pixels = ((images.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(array) for array in pixels.permute(0, 2, 3, 1).numpy()]


def _check_size(path: str | os.PathLike, size: tuple[int, int], *, max_pixels: int, min_side: int) -> None:
    """Reject images whose header size (width, height) is over `max_pixels` or under `min_side`."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"image '{path}' is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}; "
            "downscale it first or raise max_pixels"
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"image '{path}' is {width}x{height} pixels, smaller than the minimum side of {min_side}; "
            "use a larger image"
        )


# Formats whose further frames belong to the one picture of the first: MPO (JPEG with the previews, depth map or
# HDR gain map a phone or camera stores beside the photo) and PSD (its layers; the first frame is the composite).
_FRAMES_OF_ONE_PICTURE = ("MPO", "PSD")


def _check_single_frame(path: str | os.PathLike, image: Image.Image) -> None:
    """Refuse a file of several pictures (an animated GIF, APNG or WebP, a multi-page TIFF): an edit takes one
    image, and which frame that is must not be picked silently."""
    if image.format in _FRAMES_OF_ONE_PICTURE:
        return
    try:
        frames = getattr(image, "n_frames", 1)  # counting may walk the whole file (GIF)
    except _DECODE_ERRORS as error:
        raise _image_error(path, "is truncated or corrupt", error, "re-export or replace the file") from None
    if frames > 1:
        kind = "a multi-page" if image.format == "TIFF" else "an animated"
        raise ImageError(f"image '{path}' is {kind} {image.format} of {frames} frames, and an edit takes one image; "
                         "save the frame you want as a PNG and give that file")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any mode to 8-bit RGB, compositing transparency on white."""
    if image.mode in _HIGH_BIT_GREY_MODES:
        return _high_bit_grey_to_l(image).convert("RGB")
    # has_transparency_data also covers palette and colour-key transparency kept in image.info.
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_bit_grey_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit) greyscale to 8-bit L so that full scale maps to 255.

    16-bit modes have a full scale of 65535. Mode "I" is how PIL holds 16-bit data from several
    formats (e.g. PGM), so it is treated as 16-bit unless its values exceed that range.
    """
    values = np.asarray(image).astype(np.float64)
    full_scale = 65535.0
    if image.mode == "I" and values.max() > full_scale:
        full_scale = float(np.iinfo(np.int32).max)
    grey = np.clip(values, 0.0, full_scale) * (255.0 / full_scale)
    return Image.fromarray(np.round(grey).astype(np.uint8))


def _image_error(path: str | os.PathLike, problem: str, cause: BaseException, fix: str) -> ImageError:
    """Build a one-line ImageError: what is wrong with the file, PIL's reason, and what to do."""
    reason = " ".join(str(cause).split()) or type(cause).__name__
    return ImageError(f"image '{path}' {problem} ({reason}); {fix}")


def check_same_length(**lists: Sequence) -> int:
    """The common length of paired lists (samples and their inputs, prompts, labels); ValueError naming each
    list's length if they differ."""
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have the same length, got {lengths}")
    return next(iter(lengths.values()))
