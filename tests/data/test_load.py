"""Tests for the front of the data layer (`swin_flax.data`: config -> data sets) and the
in-memory data set (`swin_flax.data.dataset`: ArrayDataset, validation split, index batches,
stacking images). The loaders have their own files: test_data_tfds.py,
test_data_image_folder.py, test_data_digits.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swin_flax import data
from swin_flax.data import images as images_mod
from swin_flax.errors import BadImagesError, UserInputError

# --------------------------------------------------------------------------------------
# ArrayDataset and the validation split
# --------------------------------------------------------------------------------------


def test_array_dataset_rejects_bad_inputs():
    images = np.zeros((3, 4, 4, 3), np.uint8)
    labels = np.zeros(3, np.int32)
    assert len(data.ArrayDataset(images, labels, 2)) == 3
    with pytest.raises(ValueError, match="uint8"):
        data.ArrayDataset(images.astype(np.float32), labels, 2)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        data.ArrayDataset(np.zeros((3, 4, 4, 1), np.uint8), labels, 2)
    with pytest.raises(ValueError, match="int32"):
        data.ArrayDataset(images, labels.astype(np.int64), 2)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        data.ArrayDataset(images, np.zeros(2, np.int32), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        data.ArrayDataset(images, np.array([0, 1, 2], np.int32), 2)
    with pytest.raises(ValueError, match="class_names"):
        data.ArrayDataset(images, labels, 2, class_names=("a",))


def test_split_train_validation_is_disjoint_sized_and_seeded():
    ids = np.arange(50)
    images = np.broadcast_to(ids[:, None, None, None], (50, 2, 2, 3)).astype(np.uint8)
    ds = data.ArrayDataset(images, ids.astype(np.int32), num_classes=50)  # label = example id
    train, val = data.split_train_validation(ds, 0.2, seed=3)
    assert (len(train), len(val)) == (40, 10)
    assert set(train.labels).isdisjoint(val.labels)
    assert set(train.labels) | set(val.labels) == set(range(50))
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], train.labels)  # pairs kept
    assert train.num_classes == val.num_classes == 50
    again_train, again_val = data.split_train_validation(ds, 0.2, seed=3)
    np.testing.assert_array_equal(again_val.labels, val.labels)
    np.testing.assert_array_equal(again_train.images, train.images)
    _, other_val = data.split_train_validation(ds, 0.2, seed=4)
    assert set(other_val.labels) != set(val.labels)
    with pytest.raises(ValueError, match="non-empty"):
        data.split_train_validation(ds, 0.001, seed=0)


def test_stack_images_mixed_sizes_name_the_config_key():
    images = [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)]
    with pytest.raises(UserInputError, match=r"\(4, 4, 3\), \(5, 4, 3\).*data\.stored_size=N"):
        images_mod.stack_images(images, None, "digits")


# --------------------------------------------------------------------------------------
# Index batches
# --------------------------------------------------------------------------------------


def test_epoch_batches_are_seeded_permutations():
    batches = data.epoch_batches(103, 10, seed=1, epoch=0)
    assert batches.shape == (10, 10) and batches.dtype == np.int32
    flat = batches.ravel()
    assert len(set(flat)) == 100 and flat.min() >= 0 and flat.max() < 103
    np.testing.assert_array_equal(batches, data.epoch_batches(103, 10, seed=1, epoch=0))
    assert not np.array_equal(batches, data.epoch_batches(103, 10, seed=1, epoch=1))
    assert not np.array_equal(batches, data.epoch_batches(103, 10, seed=2, epoch=0))
    padded = data.epoch_batches(103, 10, seed=1, epoch=0, drop_remainder=False)
    assert padded.shape == (11, 10) and set(padded.ravel()) == set(range(103))
    assert data.steps_per_epoch(103, 10) == 10 and data.steps_per_epoch(103, 10, False) == 11
    with pytest.raises(ValueError, match="no full batch"):
        data.epoch_batches(5, 10, seed=0, epoch=0)


def test_eval_batches_cover_every_example_once():
    indices, mask = data.eval_batches(23, 5)
    assert indices.shape == mask.shape == (5, 5) and mask.dtype == bool
    np.testing.assert_array_equal(np.sort(indices[mask]), np.arange(23))
    assert mask.sum() == 23 and not mask[-1, 3:].any()
    assert indices.min() >= 0 and indices.max() < 23  # padding is a valid gather index
    exact_indices, exact_mask = data.eval_batches(20, 5)
    assert exact_indices.shape == (4, 5) and exact_mask.all()


# --------------------------------------------------------------------------------------
# The config's data section -> (train, eval)
# --------------------------------------------------------------------------------------


def test_data_is_the_one_import_for_the_data_layer():
    for name in data.__all__:
        assert hasattr(data, name), name


def _data_config(**overrides):
    from swin_flax.settings import DataSettings

    return DataSettings(**{"source": "digits", **overrides})


def test_load_datasets_digits_validation_carve_out_and_unknown_source():
    train, test = data.load_datasets(_data_config(stored_size=8), seed=0)
    assert (len(train), len(test)) == (1347, 450) and train.images.shape[1:] == (8, 8, 3)
    train, validation = data.load_datasets(
        _data_config(stored_size=8, validation_fraction=0.1), seed=0
    )
    assert (len(train), len(validation)) == (1212, 135)  # carved out of the 1347
    with pytest.raises(UserInputError, match="data.source must be one of"):
        data.load_datasets(_data_config(source="csv"), seed=0)


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)


def test_load_datasets_image_folder_reports_bad_files_of_both_splits_at_once(tmp_path):
    for split in ("train", "test"):
        _write_png(tmp_path / split / "cat" / "good.png", 7)
        (tmp_path / split / "cat" / "empty.png").write_bytes(b"")
    config = _data_config(source="image_folder", root=str(tmp_path))
    with pytest.raises(BadImagesError) as info:
        data.load_datasets(config, seed=0)
    assert [path for path, _ in info.value.bad_files] == [
        str(tmp_path / "train" / "cat" / "empty.png"),
        str(tmp_path / "test" / "cat" / "empty.png"),
    ]
    assert str(tmp_path / "train") in str(info.value) and str(tmp_path / "test") in str(info.value)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        train, test = data.load_datasets(dataclasses.replace(config, skip_bad_images=True), seed=0)
    assert len(train) == len(test) == 1 and train.skipped_files and test.skipped_files


def test_balanced_subset_is_class_balanced_seeded_and_ordered():
    from swin_flax.data.dataset import balanced_subset

    labels = np.repeat(np.arange(4, dtype=np.int32), [50, 30, 10, 10])
    ds = data.ArrayDataset(images=np.zeros((100, 2, 2, 3), np.uint8), labels=labels, num_classes=4)
    subset = balanced_subset(ds, 40, seed=3)
    assert np.bincount(subset.labels).tolist() == [10, 10, 10, 10]
    again = balanced_subset(ds, 40, seed=3)
    np.testing.assert_array_equal(subset.labels, again.labels)
    assert list(subset.labels) == sorted(subset.labels)  # original order kept
    assert np.bincount(balanced_subset(ds, 70, seed=0).labels).tolist() == [25, 25, 10, 10]
    assert balanced_subset(ds, 0, seed=0) is ds
