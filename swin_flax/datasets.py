"""The data section of a config -> (train, evaluation) data sets, held as uint8 arrays."""

from __future__ import annotations

from swin_flax import data
from swin_flax.errors import UserInputError

SOURCES = ("tfds", "image_folder", "digits")


def load_datasets(data_config, *, seed: int) -> tuple[data.ArrayDataset, data.ArrayDataset]:
    """Train set and evaluation set (the validation split when one is carved, else test).

    `seed` only decides how examples are split (digits, the validation carve-out): the
    pipeline passes data.split_seed, so runs with different training seeds are scored on
    the same examples.
    """
    source = data_config.source
    if source == "tfds":
        train = data.load_tfds(data_config.name, data_config.train_split,
                               data_config.data_dir or None, download=data_config.download)
        test = data.load_tfds(data_config.name, data_config.test_split,
                              data_config.data_dir or None, download=data_config.download)
    elif source == "image_folder":
        size = data_config.stored_size or None
        train = data.load_image_folder(data_config.root, data_config.train_split, image_size=size)
        test = data.load_image_folder(data_config.root, data_config.test_split, image_size=size)
    elif source == "digits":
        train, test = data.load_digits(seed=seed, image_size=data_config.stored_size or 32)
    else:
        raise UserInputError(f"data.source must be one of {SOURCES}, got {source!r}")
    if data_config.validation_fraction:
        train, validation = data.split_train_validation(
            train, data_config.validation_fraction, seed)
        return train, validation
    return train, test
