"""Images for a deployed model, preprocessed exactly as training evaluated them.

Training reads an image folder with `decode_image(path, data.stored_size)` (a PIL bilinear
resize to stored_size x stored_size, with libjpeg's draft scaling for large JPEGs; TFDS and
digits arrays get the same PIL resize from `stack_images`), and the jitted eval step then
normalises and resizes to the model's img_size on the device (`preprocess_eval`:
`jax.image.resize`, bilinear, antialiased). `Preprocessing` repeats both steps:

    pre = Preprocessing(img_size=32, stored_size=64)  # from the checkpoint or the export
    batch = pre([pre.decode(path) for path in files])  # (N, 32, 32, 3) float32

Resizing the original once to img_size, as deployment did before, is another input
whenever stored_size differs from img_size: for a 3-class CIFAR-10 swin_micro trained at
stored_size 64, img_size 32, the 900 test photos differ by 0.087 normalised units on average,
46 predictions change and the top-1 is 69.11% instead of training's 70.22% (this path gives
70.22%, pixel-equal inputs). A checkpoint or export that does not record a stored size
(converted weights, files written before it was recorded) goes straight to img_size, as
training does with data.stored_size=0.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from swin_flax.data.images import decode_image, stack_images


def preprocess_images(images_uint8: list[np.ndarray], img_size: int) -> np.ndarray:
    """(N, img_size, img_size, 3) float32: normalised and resized on the device as the eval
    step does (`swin_flax.data.augment.preprocess_eval`), one image at a time (sizes differ)."""
    from swin_flax.data.augment import preprocess_eval

    return np.stack(
        [np.asarray(preprocess_eval(image[None], out_size=img_size)[0]) for image in images_uint8]
    ).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Training's evaluation path for one model: decode (resized to `stored_size` when
    set), then normalise and resize to `img_size`."""

    img_size: int
    stored_size: int | None = None

    @classmethod
    def from_metadata(cls, metadata: dict) -> Preprocessing:
        """From an export's (or a checkpoint runner's) metadata; no 'stored_size' key: None."""
        return cls(int(metadata["img_size"]), metadata.get("stored_size") or None)

    def decode(self, path: str | os.PathLike) -> np.ndarray:
        """An image file as training stored it: (stored_size, stored_size, 3) uint8, or its
        own size without a stored size. Raises BadImagesError for an unreadable file."""
        return decode_image(path, self.stored_size)

    def stored(self, image_uint8: np.ndarray) -> np.ndarray:
        """An image already in memory (a TFDS split, a synthetic image) as training stored
        it: RGB, PIL-resized to stored_size when set."""
        return stack_images([image_uint8], self.stored_size, "an image")[0]

    def __call__(self, images_uint8: list[np.ndarray]) -> np.ndarray:
        """Decoded images (from `decode` or `stored`) -> the model's float32 NHWC input."""
        return preprocess_images(images_uint8, self.img_size)

    def describe(self) -> str:
        stored = (
            f"PIL bilinear resize to {self.stored_size} x {self.stored_size} (data.stored_size), "
            if self.stored_size
            else ""
        )
        return (
            f"RGB, {stored}(x/255 - mean) / std, bilinear resize to {self.img_size} x "
            f"{self.img_size} (jax.image.resize, antialiased)"
        )


def as_preprocessing(spec: Preprocessing | int) -> Preprocessing:
    """`spec` itself, or for a bare img_size the path without a stored size."""
    return spec if isinstance(spec, Preprocessing) else Preprocessing(int(spec))
