"""Images to uint8 pixels: the one place a file becomes pixels (`decode_image`), and decoded
images stacked into one uint8 array (`stack_images`).

`decode_image` serves the image-folder loader, predict.py and the export's check images:
a file (or its bytes) -> (H, W, 3) uint8 RGB, optionally resized. Whatever it cannot
decode (missing, empty, truncated, not an image, over PIL.Image.MAX_IMAGE_PIXELS: a
decompression bomb is rejected from its header) is one `BadImagesError` naming the file
and why.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

import numpy as np

from swin_flax.errors import BadImagesError, UserInputError

# How to get one image size, said for both ways in: the config key and the function
# argument (load_image_folder, load_tfds, load_digits all call it image_size).
RESIZE_ADVICE = (
    "set data.stored_size=N (config) / image_size=N (load_image_folder, load_tfds) "
    "to resize them all to N x N"
)


class _TooManyPixels(Exception):
    """An image whose header promises more pixels than PIL.Image.MAX_IMAGE_PIXELS."""


def decode_image(
    source: str | os.PathLike | bytes, size: int | None = None, *, name: str | None = None
) -> np.ndarray:
    """An image file (a path) or its content (bytes) as (H, W, 3) uint8 RGB, resized
    (bilinear) to (size, size) when `size` is set.

    Every pixel is decoded, so a truncated file fails here and not later. A file that
    cannot be decoded raises `BadImagesError` whose `bad_files` is ((name, reason),);
    `name` defaults to the path ('image bytes' for bytes).
    """
    from PIL import Image

    name = name or ("image bytes" if isinstance(source, bytes) else os.fspath(source))
    try:
        return _decode(source, size)
    except FileNotFoundError:
        raise BadImagesError(f"{name}: no such image file", ((name, "no such file"),)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, _TooManyPixels) as err:
        # What PIL raises for bad content: OSError (truncated data; UnidentifiedImageError
        # is one), SyntaxError and ValueError (broken headers), DecompressionBombError
        # (over twice MAX_IMAGE_PIXELS, from the header alone).
        reason = _bad_image_reason(source, err)
        raise BadImagesError(
            f"{name}: not a readable image ({reason})", ((name, reason),)
        ) from None


def _decode(source: str | os.PathLike | bytes, size: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        _check_pixel_count(image)
        box = None
        if size is not None and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: far faster and smaller than a
            # full decode when downscaling a lot. It picks the largest reduction that
            # keeps both sides >= size, so an image less than twice the target decodes
            # in full, exactly as without it; larger ones differ slightly in pixels
            # from full decode + resize. `box` maps the scaled image back onto the
            # original's area for the resize, as Image.thumbnail does (None: no draft).
            drafted = image.draft("RGB", (size, size))
            box = drafted[1] if drafted else None
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)
        return np.asarray(rgb)


def _check_pixel_count(image) -> None:
    """Reject an image from its header alone, before decoding a possible bomb.

    PIL itself only warns between MAX_IMAGE_PIXELS and twice that, so a 12000x12000
    image would be decoded (432 MB) without this. Its own knob is kept as the limit:
    setting PIL.Image.MAX_IMAGE_PIXELS = None allows any size here too.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise _TooManyPixels(
            f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS): a decompression bomb, or raise that limit"
        )


def _bad_image_reason(source: str | os.PathLike | bytes, err: Exception) -> str:
    """Why an image cannot be decoded, in one line."""
    from PIL import Image

    if isinstance(err, _TooManyPixels):
        return str(err)
    if isinstance(err, Image.UnidentifiedImageError):
        return "empty file" if _is_empty(source) else "not an image file PIL can read"
    first_line = str(err).strip().split("\n")[0]
    return f"cannot decode ({type(err).__name__}: {first_line})"


def _is_empty(source: str | os.PathLike | bytes) -> bool:
    if isinstance(source, bytes):
        return not source
    try:
        return os.stat(source).st_size == 0
    except OSError:
        return False


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3): grayscale data sets
    (MNIST-like) must fit the 3-channel patch embedding of ImageNet-pretrained models."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise UserInputError(f"expected a grayscale or RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise UserInputError(f"expected uint8 pixels, got {image.dtype}")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear PIL resize of an (H, W, 3) uint8 image to (size, size, 3)."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def stack_images(images: Iterable[np.ndarray], image_size: int | None, source: str) -> np.ndarray:
    """Stack images into one (N, H, W, 3) array, resizing them if `image_size` is set.

    Without `image_size` all images must already share one size: silently picking a
    target size would hide a data problem, so differing sizes are an error.
    """
    rgb = [_to_rgb(image) for image in images]
    if image_size is not None:
        rgb = [_resize_rgb(image, image_size) for image in rgb]
    if not rgb:
        raise UserInputError(f"{source} holds no images")
    shapes = sorted({image.shape for image in rgb})
    if len(shapes) > 1:
        raise UserInputError(
            f"images in {source} have different sizes ({shapes[0]}, {shapes[1]}, ...); "
            f"{RESIZE_ADVICE}"
        )
    return np.stack(rgb)
