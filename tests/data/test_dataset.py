"""The in-memory data set (`swin_flax.data.dataset`): ArrayDataset checks its arrays where
it is made; validation carve-outs and balanced subsets are seeded and keep the order."""

import numpy as np
import pytest

from swin_flax import data


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


def test_take_keeps_the_classes_and_pairs_images_with_labels():
    images = np.arange(4, dtype=np.uint8)[:, None, None, None].repeat(3, -1)
    ds = data.ArrayDataset(images, np.array([0, 1, 2, 1], np.int32), 3, class_names=("a", "b", "c"))
    part = ds.take(np.array([3, 1]))
    assert len(part) == 2 and part.labels.tolist() == [1, 1]
    assert part.images[:, 0, 0, 0].tolist() == [3, 1]
    assert (part.num_classes, part.class_names) == (3, ("a", "b", "c"))
