"""scikit-learn's handwritten digits as `ArrayDataset`s: a real data set that needs no
network (the files ship inside scikit-learn), for demos and smoke tests. scikit-learn is
imported inside `load_digits`, so this module imports on a machine without it."""

from __future__ import annotations

import numpy as np

from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.images import stack_images


def load_digits(
    seed: int = 0, image_size: int = 32, test_fraction: float = 0.25
) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) as `(train, test)`.

    A real data set that needs no network: the files ship inside scikit-learn. Pixel
    values 0..16 are scaled to 0..255, the images upscaled (bilinear) to
    `image_size` x `image_size` RGB, and the split is stratified and seeded.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = stack_images(list(gray), image_size, "scikit-learn digits")
    dataset = ArrayDataset(
        images=images,
        labels=digits.target.astype(np.int32),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
    )
    train, test = train_test_split(
        np.arange(len(dataset)),
        test_size=test_fraction,
        random_state=seed,
        stratify=dataset.labels,
    )
    return dataset.take(np.sort(train)), dataset.take(np.sort(test))
