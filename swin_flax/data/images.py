"""Decoded images to one uint8 array: the one place images are converted and resized."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from swin_flax.errors import UserInputError

# How to get one image size, said for both ways in: the config key and the function
# argument (load_image_folder, load_tfds, load_digits all call it image_size).
RESIZE_ADVICE = (
    "set data.stored_size=N (config) / image_size=N (load_image_folder, load_tfds) "
    "to resize them all to N x N"
)


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
