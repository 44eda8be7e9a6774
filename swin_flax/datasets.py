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
    size = data_config.stored_size or None
    if source == "tfds":
        train = data.load_tfds(data_config.name, data_config.train_split,
                               data_config.data_dir or None, download=data_config.download,
                               image_size=size)
        test = data.load_tfds(data_config.name, data_config.test_split,
                              data_config.data_dir or None, download=data_config.download,
                              image_size=size)
    elif source == "image_folder":
        train, test = _load_image_folder_splits(data_config, size)
    elif source == "digits":
        train, test = data.load_digits(seed=seed, image_size=data_config.stored_size or 32)
    else:
        raise UserInputError(f"data.source must be one of {SOURCES}, got {source!r}")
    if data_config.validation_fraction:
        train, validation = data.split_train_validation(
            train, data_config.validation_fraction, seed)
        return train, validation
    return train, test


def _load_image_folder_splits(data_config, size: int | None):
    """Both splits, with the unreadable files of both in one error: fixing them one split
    per run would cost a run per split."""
    splits, errors = [], []
    for split in (data_config.train_split, data_config.test_split):
        try:
            splits.append(data.load_image_folder(data_config.root, split, image_size=size,
                                                 skip_bad=data_config.skip_bad_images))
        except data.BadImagesError as err:
            errors.append(err)
    if errors:
        raise data.BadImagesError("\n".join(str(e) for e in errors),
                                  tuple(f for e in errors for f in e.bad_files))
    return splits
