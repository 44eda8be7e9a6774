"""The config's data section -> the `ArrayDataset`s of a run: the source chosen, seeded
class-balanced subsets and a validation carve-out applied.

`load_splits` gives train, test and (with data.validation_fraction) a validation set carved
out of the training subset: the run trains on train, chooses on validation and reports test.
`load_datasets` is the older two-set view, (train, validation or test).
"""

from __future__ import annotations

import dataclasses

from swin_flax import cli
from swin_flax.data.augment import ResizedCrop
from swin_flax.data.dataset import (
    ArrayDataset,
    balanced_subset,
    check_two_classes,
    missing_classes_notes,
    split_train_validation,
)
from swin_flax.data.digits import load_digits
from swin_flax.data.image_folder import first_image_size, load_image_folder
from swin_flax.data.tfds_source import load_tfds
from swin_flax.errors import BadImagesError, UserInputError
from swin_flax.settings import DATA_SOURCES as SOURCES  # declared with data.source's check


@dataclasses.dataclass(frozen=True)
class Splits:
    train: ArrayDataset
    test: ArrayDataset
    validation: ArrayDataset | None = None  # carved out of train; never the test split


def load_splits(data_config, *, seed: int) -> Splits:
    """Train, test and validation sets. The training subset (data.train_subset) is taken
    first and the validation fraction carved out of it, so a small-data run validates on its
    own data, not on images it would never have had.

    `seed` only decides how examples are split (digits, subsets, the carve-out): the
    pipeline passes data.split_seed, so runs with different training seeds are scored on
    the same examples.
    """
    train, test = _load_train_test(data_config, seed)
    train = balanced_subset(train, data_config.train_subset, seed)
    test = balanced_subset(test, data_config.test_subset, seed)
    check_two_classes(train, data_config.root or data_config.name or data_config.source)
    validation = None
    if data_config.validation_fraction:
        train, validation = split_train_validation(train, data_config.validation_fraction, seed)
    for text in missing_classes_notes(train, {"test": test, "validation": validation}):
        cli.note(text)
    return Splits(train=train, test=test, validation=validation)


def load_datasets(data_config, *, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Train set and evaluation set (the validation set when one is carved, else test)."""
    splits = load_splits(data_config, seed=seed)
    return splits.train, splits.validation if splits.validation is not None else splits.test


def _load_train_test(data_config, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    source = data_config.source
    size = data_config.stored_size or None
    if source == "tfds":
        train, test = (
            load_tfds(
                data_config.name,
                split,
                data_config.data_dir or None,
                download=data_config.download,
                image_size=size,
            )
            for split in (data_config.train_split, data_config.test_split)
        )
    elif source == "image_folder":
        train, test = _load_image_folder_splits(data_config, size)
    elif source == "digits":
        train, test = load_digits(seed=seed, image_size=data_config.stored_size or 32)
    else:
        raise UserInputError(f"data.source must be one of {SOURCES}, got {source!r}")
    return train, test


def _load_image_folder_splits(data_config, size: int | None) -> list[ArrayDataset]:
    """Both splits, with the unreadable files of both in one error: fixing them one split
    per run would cost a run per split."""
    splits, errors = [], []
    for split in (data_config.train_split, data_config.test_split):
        try:
            splits.append(
                load_image_folder(
                    data_config.root, split, image_size=size, skip_bad=data_config.skip_bad_images
                )
            )
        except BadImagesError as err:
            errors.append(err)
    if errors:
        raise BadImagesError(
            "\n".join(str(e) for e in errors), tuple(f for e in errors for f in e.bad_files)
        )
    return splits


def resized_crop(data_config) -> ResizedCrop | None:
    """data.random_resized_crop resolved: timm's RandomResizedCrop with data.crop_scale and
    data.crop_ratio, or None (the padded crop of data.crop_padding).

    'auto' turns it on when the training images are larger than the model input, i.e. their
    shorter stored side exceeds data.image_size (`stored_side`): photos trained at a smaller
    size, where a random box of the photo is worth more than a shift by a few pixels.
    CIFAR-sized images trained at their own size (32 px; or upscaled to 224) keep the CIFAR
    recipe, and so does every source whose size is unknown without decoding it (tfds or
    digits without data.stored_size: set 'on' to use it there).
    """
    mode = data_config.random_resized_crop
    crop = ResizedCrop(tuple(data_config.crop_scale), tuple(data_config.crop_ratio))
    if mode == "on":
        return crop
    if mode == "auto":
        side = stored_side(data_config)
        return crop if side is not None and side > data_config.image_size else None
    return None


def stored_side(data_config) -> int | None:
    """The shorter side of the training images as the run stores them, known without
    decoding them all: data.stored_size when set (every image is resized to it), else for an
    image folder its first training image's (all must share it), else None."""
    if data_config.stored_size:
        return data_config.stored_size
    if data_config.source == "image_folder" and data_config.root:
        size = first_image_size(data_config.root, data_config.train_split)
        return min(size) if size else None
    return None
