"""Sizes before decoding (`swin_flax.data.sizes`): the counts `count_splits` gives without
decoding an image are the sizes `load_splits` gives once it has (subsets taken, the
validation fraction carved out), for digits and image folders; an unprepared TFDS data set
says so and still knows its classes."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from swin_flax.data import load_splits
from swin_flax.data.sizes import SplitSizes, count_splits, sizes_of
from swin_flax.settings import DataSettings


def image_folder(root, per_class):
    rng = np.random.default_rng(0)
    for split, counts in per_class.items():
        for c, count in enumerate(counts):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"train_subset": 25, "test_subset": 5},
        {"validation_fraction": 0.15},
        {"train_subset": 9, "validation_fraction": 0.3},
    ],
)
def test_counted_image_folder_sizes_are_the_loaded_ones(tmp_path, changes):
    root = image_folder(tmp_path, {"train": (11, 9, 13), "test": (3, 4, 2)})
    data = DataSettings(source="image_folder", root=str(root), **changes)
    counted = count_splits(data)
    assert counted == sizes_of(load_splits(data, seed=0))
    assert counted.num_classes == 3 and counted.unknown == ""


@pytest.mark.parametrize("changes", [{}, {"train_subset": 500, "validation_fraction": 0.1}])
def test_counted_digits_sizes_are_the_loaded_ones(changes):
    data = DataSettings(source="digits", stored_size=8, **changes)
    assert count_splits(data) == sizes_of(load_splits(data, seed=0))
    assert count_splits(DataSettings(source="digits")) == SplitSizes(1347, 450, 10)


def test_an_unprepared_tfds_data_set_has_unknown_sizes_and_known_classes(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    data = DataSettings(
        source="tfds", name="cifar10", data_dir=str(tmp_path), validation_fraction=0.1
    )
    counted = count_splits(data)
    assert (counted.train, counted.test, counted.num_classes) == (None, None, 10)
    assert counted.unknown == "TFDS 'cifar10' is not prepared yet"
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or written
    assert dataclasses.replace(counted, unknown="") == SplitSizes(None, None, 10)
