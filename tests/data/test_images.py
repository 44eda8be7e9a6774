"""swin_flax.data.images: the one decoder (a file or its bytes -> (H, W, 3) uint8 RGB,
optional resize with the JPEG draft, the pixel-count check, one error per bad file) and
the stacking of decoded images into one array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swin_flax.data.images import decode_image, stack_images
from swin_flax.errors import BadImagesError, UserInputError

ROOT = Path(__file__).resolve().parents[2]


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(pixels: np.ndarray, path, **options):
    Image.fromarray(pixels).save(path, **options)
    return path


def _plain_decode(path, size: int | None = None) -> np.ndarray:
    """Full decode to RGB, then a bilinear resize: what decode_image must give (no draft)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if size is not None:
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def test_a_png_decodes_to_its_rgb_pixels_from_a_path_or_its_bytes(tmp_path):
    pixels = _noise(5, 7)
    path = _save(pixels, tmp_path / "a.png")
    for source in (path, str(path), path.read_bytes()):
        decoded = decode_image(source)
        assert decoded.dtype == np.uint8 and decoded.shape == (5, 7, 3)
        np.testing.assert_array_equal(decoded, pixels)


def test_other_modes_become_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "gray.png"), np.stack([gray] * 3, -1))
    rgba = np.dstack([_noise(3, 4), np.full((3, 4), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "rgba.png"), rgba[..., :3])
    Image.fromarray(_noise(6, 6)).convert("P").save(tmp_path / "palette.gif")
    assert decode_image(tmp_path / "palette.gif").shape == (6, 6, 3)


def test_size_resizes_bilinearly_as_a_full_decode_would(tmp_path):
    png = _save(_noise(10, 14, seed=1), tmp_path / "a.png")
    np.testing.assert_array_equal(decode_image(png, 6), _plain_decode(png, 6))
    # A JPEG less than twice the target: no draft, exactly the full decode + resize.
    jpeg = _save(_noise(10, 14, seed=2), tmp_path / "b.jpg", quality=90)
    np.testing.assert_array_equal(decode_image(jpeg, 9), _plain_decode(jpeg, 9))
    np.testing.assert_array_equal(decode_image(jpeg.read_bytes(), 9), _plain_decode(jpeg, 9))


def test_a_jpeg_far_over_the_target_is_drafted_and_stays_close(tmp_path):
    y, x = np.mgrid[0:190, 0:250]
    smooth = np.stack([x, y * 1.3, (x + y) / 1.8], axis=-1).astype(np.uint8)  # gradients
    path = _save(smooth, tmp_path / "big.jpg", quality=90)
    drafted = decode_image(path, 32)
    full = _plain_decode(path, 32).astype(np.int16)
    assert drafted.shape == (32, 32, 3)
    assert not np.array_equal(drafted, full)  # decoded at 1/4 scale, then resized
    assert np.abs(drafted - full).mean() < 0.5 and np.abs(drafted - full).max() <= 2


@pytest.mark.parametrize(
    "case,reason",
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("text", "not an image file PIL can read"),
        ("truncated", "cannot decode (OSError: image file is truncated"),
    ],
)
def test_a_bad_file_is_one_error_line_naming_it_and_why(case, reason, tmp_path):
    path = tmp_path / f"{case}.jpg"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a JPEG\n")
    elif case == "truncated":
        whole = _save(_noise(64, 64, seed=4), tmp_path / "whole.jpg").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadImagesError) as info:
        decode_image(path)
    ((name, got),) = info.value.bad_files
    assert name == str(path) and got.startswith(reason)
    expected = "no such image file" if case == "missing" else f"not a readable image ({got})"
    assert str(info.value) == f"{path}: {expected}" and "\n" not in str(info.value)


def test_bytes_are_named_by_the_caller(tmp_path):
    with pytest.raises(BadImagesError, match=r"^image bytes: not a readable image \(empty file\)$"):
        decode_image(b"")
    with pytest.raises(BadImagesError, match=r"^cifar.tar.gz:test/cat/1.png: not a readable image"):
        decode_image(b"GIF89a broken", name="cifar.tar.gz:test/cat/1.png")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, on open
def test_the_pixel_limit_is_pils_and_is_checked_from_the_header(tmp_path, monkeypatch):
    path = _save(_noise(40, 30), tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImagesError) as info:
        decode_image(path)
    assert info.value.bad_files[0][1] == (
        "30x40 = 1,200 pixels, over the limit of 1,000 (PIL.Image.MAX_IMAGE_PIXELS): "
        "a decompression bomb, or raise that limit"
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's way to allow any size
    assert decode_image(path).shape == (40, 30, 3)


def test_no_other_module_opens_an_image_file():
    """predict.py, the export's check images and the image-folder loader all decode here:
    a later decoder change (16-bit modes, EXIF orientation) must reach every one of them."""
    sources = [*(ROOT / "swin_flax").rglob("*.py"), *ROOT.glob("*.py")]
    opening = sorted(
        str(path.relative_to(ROOT)) for path in sources if "Image.open(" in path.read_text()
    )
    assert opening == ["swin_flax/data/images.py"]


def test_stack_images_mixed_sizes_name_the_config_key():
    images = [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)]
    with pytest.raises(UserInputError, match=r"\(4, 4, 3\), \(5, 4, 3\).*data\.stored_size=N"):
        stack_images(images, None, "digits")


# --- deep pixels (16/32-bit integers, floats) and the EXIF orientation


def _gray_ramp(dtype, top) -> np.ndarray:
    """A (6, 8) ramp from 0 to `top` in `dtype`: every level of a deep image, end to end."""
    return np.linspace(0, top, 48).reshape(6, 8).astype(dtype)


@pytest.mark.parametrize(
    "pixels, suffix, full_scale",
    [
        (_gray_ramp(np.uint16, 65535), ".png", 65535),  # mode I;16 (a 16-bit PNG)
        (_gray_ramp(np.uint16, 65535), ".tif", 65535),  # mode I;16 (a 16-bit TIFF)
        (_gray_ramp(np.int32, 2**31 - 1), ".tif", 2**31 - 1),  # mode I (32-bit signed)
        (_gray_ramp(np.float32, 1.0), ".tif", 1.0),  # mode F (32-bit float in [0, 1])
    ],
)
def test_deep_grayscale_maps_its_full_range_onto_0_to_255(tmp_path, pixels, suffix, full_scale):
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(pixels).save(path)
    decoded = decode_image(path)
    expected = np.rint(pixels.astype(np.float64) * 255 / full_scale).astype(np.uint8)
    assert decoded.shape == (6, 8, 3)
    np.testing.assert_array_equal(decoded, np.stack([expected] * 3, -1))


def test_a_16_bit_png_keeps_its_brightness_instead_of_turning_white(tmp_path):
    pixels = np.full((16, 16), 70 * 257, np.uint16)  # level 70 of 255, in 16 bits
    Image.fromarray(pixels).save(tmp_path / "dim.png")
    assert decode_image(tmp_path / "dim.png").mean() == 70.0
    assert decode_image(tmp_path / "dim.png", 8).mean() == 70.0


def test_float_pixels_outside_0_1_and_unconvertible_modes_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((4, 4), 3.5, np.float32)).save(tmp_path / "depth.tif")
    with pytest.raises(BadImagesError, match=r"depth.tif.*float pixels from 3.5 to 3.5, not in"):
        decode_image(tmp_path / "depth.tif")
    # No file format opens as La (premultiplied alpha): the conversion's refusal, directly.
    from swin_flax.data import images

    with pytest.raises(images._UnsupportedPixels, match=r"Pillow mode La cannot be converted"):
        images._as_rgb(Image.new("La", (2, 2)))


def _png_16_bit_rgb(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow writes none): signature, IHDR, one IDAT, IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_a_16_bit_rgb_png_keeps_its_colours(tmp_path):
    pixels = np.zeros((3, 5, 3), np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, 128 * 257, 10 * 257
    decoded = decode_image(_png_16_bit_rgb(pixels))
    np.testing.assert_array_equal(decoded[0, 0], [255, 128, 10])


def _with_orientation(pixels: np.ndarray, path, orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation  # ExifTags.Base.Orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_exif_orientation_is_applied_as_pillows_exif_transpose_does(tmp_path, orientation):
    from PIL import ImageOps

    path = _with_orientation(_noise(10, 14, seed=3), tmp_path / "photo.jpg", orientation)
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    np.testing.assert_array_equal(decode_image(path), np.asarray(upright))
    resized = np.asarray(upright.resize((9, 9), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(path, 9), resized)


def test_a_rotated_photo_far_over_the_target_is_drafted_and_shown_upright(tmp_path):
    y, x = np.mgrid[0:190, 0:250]
    smooth = np.stack([x, y * 1.3, (x + y) / 1.8], axis=-1).astype(np.uint8)
    path = _with_orientation(smooth, tmp_path / "phone.jpg", 6)  # shown turned a quarter
    drafted = decode_image(path, 32).astype(np.int16)
    upright = np.rot90(smooth, k=-1)  # clockwise: what a viewer shows
    reference = np.asarray(Image.fromarray(upright).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(drafted - reference.astype(np.int16)).max() <= 6
