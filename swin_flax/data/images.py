"""Images to uint8 pixels: the one place a file becomes pixels (`decode_image`), and decoded
images stacked into one uint8 array (`stack_images`).

`decode_image` serves the image-folder loader, predict.py and the export's check images:
a file (or its bytes) -> (H, W, 3) uint8 RGB, upright as its EXIF orientation says,
optionally resized. Pixels deeper than 8 bits (16- and 32-bit integer, 32-bit float
grayscale) are scaled from their type's full range to 0..255, not clipped. Whatever it
cannot decode (missing, empty, truncated, not an image, over PIL.Image.MAX_IMAGE_PIXELS:
a decompression bomb is rejected from its header; float pixels outside [0, 1]; a mode
Pillow cannot turn into RGB) is one `BadImagesError` naming the file and why.
"""

from __future__ import annotations

import io
import os
import warnings
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


class _UnsupportedPixels(Exception):
    """Pixels that have no faithful 8-bit RGB form here; the message says which and why."""


# Pillow's modes of more than 8 bits per pixel. convert("RGB") clips them to 255 (a 16-bit
# PNG turns white, a float image black), so they are scaled to 8 bits first.
_DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

# EXIF orientation -> the transposition that shows the image upright: the table of
# PIL.ImageOps.exif_transpose (the tests check each against it). Applied here, after the
# deep pixels are scaled, because that needs the file's format and tags.
_UPRIGHT = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


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
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        _TooManyPixels,
        _UnsupportedPixels,
    ) as err:
        # What PIL raises for bad content: OSError (truncated data; UnidentifiedImageError
        # is one), SyntaxError and ValueError (broken headers), DecompressionBombError
        # (over twice MAX_IMAGE_PIXELS, from the header alone).
        reason = _bad_image_reason(source, err)
        raise BadImagesError(
            f"{name}: not a readable image ({reason})", ((name, reason),)
        ) from None


def header_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not a readable image judged from its header alone (empty, not an
    image, over the pixel limit), or None. Opening a header costs a small read, not a
    decode: how a streamed run leaves out bad files (data.skip_bad_images) before its first
    step. A truncated file passes; its pixels fail later, in `decode_image`."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            # The limit is checked below with a reason; PIL's warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            _check_pixel_count(image)
    except FileNotFoundError:
        return "no such file"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, _TooManyPixels) as err:
        return _bad_image_reason(path, err)
    return None


def image_size_from_header(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) as stored (before any EXIF rotation), from the header alone."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    return height, width


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) as stored, from the file's header alone (nothing is decoded), or None
    when it is not an image PIL can open. EXIF rotation may swap the two after decoding."""
    from PIL import Image

    try:
        height, width = image_size_from_header(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return width, height


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
        orientation = _exif_orientation(image)
        rgb = _as_rgb(image)
        if orientation in _UPRIGHT:
            if box is not None:
                box = _transposed_box(box, rgb.size, orientation)
            rgb = rgb.transpose(Image.Transpose[_UPRIGHT[orientation]])
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)
        return np.asarray(rgb)


def _exif_orientation(image) -> int:
    """The EXIF (or TIFF, or XMP) orientation, 1 (as stored) when there is none. An
    unreadable EXIF block leaves the pixels as stored, as image viewers do."""
    try:
        return int(image.getexif().get(0x0112, 1))  # ExifTags.Base.Orientation
    except Exception:  # noqa: BLE001 (Pillow raises many kinds for a damaged EXIF block)
        return 1


def _transposed_box(box: tuple, size: tuple[int, int], orientation: int) -> tuple:
    """The JPEG draft's `box` (in the stored image of `size`) in the upright image."""
    x0, y0, x1, y1 = box
    width, height = size
    if orientation >= 5:  # a quarter turn or a transpose: the axes swap
        x0, y0, x1, y1, width, height = y0, x0, y1, x1, height, width
    if orientation in (2, 3, 6, 7):  # then mirrored left-right in the upright frame
        x0, x1 = width - x1, width - x0
    if orientation in (3, 4, 7, 8):  # and/or top-bottom
        y0, y1 = height - y1, height - y0
    return (x0, y0, x1, y1)


def _as_rgb(image):
    """`image` as an 8-bit RGB PIL image: deep grayscale scaled to 8 bits first, alpha
    dropped (as torchvision's and timm's loaders do), every other mode converted by Pillow."""
    if image.mode == "RGB":
        return image
    if image.mode in _DEEP_MODES:
        image = _deep_to_8_bit(image)
    try:
        return image.convert("RGB")
    except ValueError:  # "conversion from X to RGB not supported"
        raise _UnsupportedPixels(
            f"Pillow mode {image.mode} cannot be converted to RGB; save the image as RGB or "
            "grayscale"
        ) from None


def _deep_to_8_bit(image):
    """A 16/32-bit integer or 32-bit float grayscale image as mode L: the pixel type's full
    range maps onto 0..255 (negative values of signed types become 0, as scikit-image's
    img_as_ubyte does); float pixels must lie in [0, 1], the float image convention."""
    from PIL import Image

    values = np.asarray(image)
    if image.mode == "F":
        low, high = float(np.min(values)), float(np.max(values))
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low and high <= 1):
            raise _UnsupportedPixels(
                f"32-bit float pixels from {low:.4g} to {high:.4g}, not in [0, 1]; rescale "
                "them to [0, 1] or store them as 8- or 16-bit integers"
            )
        full_scale = 1.0
    else:
        bits, signed = _integer_depth(image)
        if bits == 32 and not signed:
            values = values.view(np.uint32)  # Pillow holds unsigned 32-bit TIFFs as int32
        full_scale = 2 ** (bits - signed) - 1
    scaled = np.rint(values.astype(np.float64) * (255 / full_scale))
    return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")


def _integer_depth(image) -> tuple[int, bool]:
    """(bits, signed) of an integer image's pixels: what the file says where it says it."""
    if image.mode.startswith("I;16"):
        return 16, False
    if image.format == "TIFF" and hasattr(image, "tag_v2"):
        bits = _first_value(image.tag_v2.get(258, 32))  # BitsPerSample
        sample_format = _first_value(image.tag_v2.get(339, 1))  # 1 unsigned, 2 signed
        return int(bits), int(sample_format) == 2
    if image.format in ("PNG", "PPM"):  # their deepest integers are 16-bit (Pillow: mode I)
        return 16, False
    return 32, True  # mode I itself: 32-bit signed


def _first_value(tag):
    """A TIFF tag's value for the first sample (Pillow gives one per sample, as a tuple)."""
    return tag[0] if isinstance(tag, tuple) else tag


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

    if isinstance(err, (_TooManyPixels, _UnsupportedPixels)):
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
