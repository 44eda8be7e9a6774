"""The data a run trains and evaluates on: the config's data section -> (train, eval).

Start here. `load_datasets` turns `config.data` into two `ArrayDataset`s, whole splits
held as uint8 arrays, and this module is also the one place to import the data layer
from. Each job lives in its own module:

  * `swin_flax.data_arrays`: `ArrayDataset`, `split_train_validation`, and the index
    batches that feed the train step (`epoch_batches`, `eval_batches`, `steps_per_epoch`).
  * `swin_flax.data_tfds`: `load_tfds` (TensorFlow Datasets) and `network_available`,
    the probe that makes an offline machine fail in seconds.
  * `swin_flax.data_image_folder`: `load_image_folder` (a `root/<split>/<class>/*.jpg`
    tree, decoded in parallel threads; unreadable files reported together or skipped).
  * `swin_flax.data_digits`: `load_digits`, scikit-learn's 8x8 digits, which need no
    network: for demos and smoke tests.

`tensorflow_datasets` and scikit-learn are imported inside the functions that need them,
so `import swin_flax.data` works on a machine that has neither.
"""

from __future__ import annotations

# Everything in __all__ is importable from here, so callers need not know which module
# of the data layer holds it.
from swin_flax.data_arrays import (
    balanced_subset,
    ArrayDataset,
    epoch_batches,
    eval_batches,
    split_train_validation,
    steps_per_epoch,
)
from swin_flax.data_digits import load_digits
from swin_flax.data_image_folder import load_image_folder
from swin_flax.data_tfds import load_tfds, network_available
from swin_flax.errors import BadImagesError, DatasetUnavailableError, UserInputError

__all__ = [
    "ArrayDataset",
    "BadImagesError",
    "DatasetUnavailableError",
    "SOURCES",
    "epoch_batches",
    "eval_batches",
    "load_datasets",
    "load_digits",
    "load_image_folder",
    "load_tfds",
    "network_available",
    "split_train_validation",
    "steps_per_epoch",
]

SOURCES = ("tfds", "image_folder", "digits")


def load_datasets(data_config, *, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Train set and evaluation set (the validation split when one is carved, else test).

    `seed` only decides how examples are split (digits, the validation carve-out): the
    pipeline passes data.split_seed, so runs with different training seeds are scored on
    the same examples.
    """
    source = data_config.source
    size = data_config.stored_size or None
    if source == "tfds":
        train, test = (
            load_tfds(data_config.name, split, data_config.data_dir or None,
                      download=data_config.download, image_size=size)
            for split in (data_config.train_split, data_config.test_split)
        )
    elif source == "image_folder":
        train, test = _load_image_folder_splits(data_config, size)
    elif source == "digits":
        train, test = load_digits(seed=seed, image_size=data_config.stored_size or 32)
    else:
        raise UserInputError(f"data.source must be one of {SOURCES}, got {source!r}")
    if data_config.validation_fraction:
        train, test = split_train_validation(train, data_config.validation_fraction, seed)
    train = balanced_subset(train, data_config.train_subset, seed)
    test = balanced_subset(test, data_config.test_subset, seed)
    return train, test


def _load_image_folder_splits(data_config, size: int | None) -> list[ArrayDataset]:
    """Both splits, with the unreadable files of both in one error: fixing them one split
    per run would cost a run per split."""
    splits, errors = [], []
    for split in (data_config.train_split, data_config.test_split):
        try:
            splits.append(load_image_folder(data_config.root, split, image_size=size,
                                            skip_bad=data_config.skip_bad_images))
        except BadImagesError as err:
            errors.append(err)
    if errors:
        raise BadImagesError("\n".join(str(e) for e in errors),
                             tuple(f for e in errors for f in e.bad_files))
    return splits
