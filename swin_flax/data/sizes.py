"""How many examples a run's data holds, known before any image is decoded.

`count_splits(config.data)` gives the sizes `load_splits` will produce (the training subset
taken and the validation fraction carved out as it does) from what is cheap to read: the
file listing of an image folder (the listing `load_image_folder` itself makes), a prepared
TFDS data set's split metadata, the fixed size of scikit-learn's digits. A TFDS data set
not prepared yet has no metadata: its sizes are None until it is ("unknown" says why);
its class count comes from the builder's features, which need no data. `sizes_of` gives
the same record for splits already loaded (exact: skipped unreadable images excluded).
The run's plan (swin_flax/pipeline/plan.py) and `train.py --plan` read these.
"""

from __future__ import annotations

import dataclasses
import math

from swin_flax.data.folder_listing import list_image_folder
from swin_flax.errors import UserInputError

DIGITS_EXAMPLES, DIGITS_CLASSES, DIGITS_TEST_FRACTION = 1797, 10, 0.25  # data/digits.py


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    """Examples per split as the run sees them, and the class count. None: not known yet."""

    train: int | None
    test: int | None
    num_classes: int
    validation: int | None = None  # carved out of the training split
    unknown: str = ""  # why train/test are None


def count_splits(data) -> SplitSizes:
    """The sizes `load_splits(data)` will give, counted without decoding an image."""
    if data.source == "image_folder":
        train, classes = count_image_folder(data.root, data.train_split)
        test, _ = count_image_folder(data.root, data.test_split)
    elif data.source == "digits":
        test = math.ceil(DIGITS_EXAMPLES * DIGITS_TEST_FRACTION)  # scikit-learn's rounding
        train, classes = DIGITS_EXAMPLES - test, DIGITS_CLASSES
    elif data.source == "tfds":
        return _count_tfds(data)
    else:
        raise UserInputError(f"data.source {data.source!r} has no size counter")
    return _after_subsets(data, train, test, classes)


def count_folder(root) -> SplitSizes:
    """The train and test splits of an image folder as they are (a pretraining's source)."""
    train, classes = count_image_folder(root, "train")
    return SplitSizes(train, count_image_folder(root, "test")[0], classes)


def sizes_of(splits) -> SplitSizes:
    """The sizes of loaded `Splits`."""
    validation = len(splits.validation) if splits.validation is not None else None
    return SplitSizes(len(splits.train), len(splits.test), splits.train.num_classes, validation)


def count_image_folder(root, split: str) -> tuple[int, int]:
    """(images, classes) of `root/<split>` from its file listing, without decoding: the
    size loading gives unless unreadable files are skipped."""
    listing = list_image_folder(root, split, note_ignored=False)
    return len(listing), len(listing.classes)


def _after_subsets(data, train: int | None, test: int | None, classes: int, unknown=""):
    """data.train_subset / test_subset, then the validation carve-out, as load_splits does."""
    if train is not None and data.train_subset:
        train = min(train, data.train_subset)
    if test is not None and data.test_subset:
        test = min(test, data.test_subset)
    validation = None
    if train is not None and data.validation_fraction:
        validation = int(round(train * data.validation_fraction))
        train -= validation
    return SplitSizes(train, test, classes, validation, unknown)


def _count_tfds(data) -> SplitSizes:
    from swin_flax.data.tfds_source import split_sizes

    (train, test), classes = split_sizes(
        data.name, (data.train_split, data.test_split), data.data_dir or None
    )
    unknown = "" if train is not None else f"TFDS '{data.name}' is not prepared yet"
    return _after_subsets(data, train, test, classes, unknown)
