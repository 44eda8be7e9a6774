"""Tests for scikit-learn's digits as data sets (`swin_flax.data.digits`)."""

from __future__ import annotations

import numpy as np

from swin_flax.data.digits import load_digits


def test_load_digits_shapes_classes_and_determinism():
    train, test = load_digits(seed=0, image_size=32, test_fraction=0.25)
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert train.images.shape[1:] == (32, 32, 3) and test.images.dtype == np.uint8
    assert train.num_classes == 10 and train.class_names == tuple("0123456789")
    assert set(train.labels) == set(test.labels) == set(range(10))
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])  # gray as RGB
    assert train.images.max() == 255 and train.images.min() == 0
    again_train, again_test = load_digits(seed=0)
    np.testing.assert_array_equal(again_test.images, test.images)
    np.testing.assert_array_equal(again_train.labels, train.labels)
    _, other_test = load_digits(seed=1)
    assert not np.array_equal(other_test.images, test.images)
    small_train, _ = load_digits(image_size=8)
    assert small_train.images.shape[1:] == (8, 8, 3)
