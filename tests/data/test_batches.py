"""Index batches (`swin_flax.data.batches`): an epoch's order is a function of (seed, epoch)
alone, evaluation sees every example exactly once in one compiled shape."""

import numpy as np
import pytest

from swin_flax import data
from swin_flax.errors import UserInputError


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


def test_impossible_batch_arguments_are_refused():
    with pytest.raises(UserInputError, match="batch_size >= 1"):
        data.steps_per_epoch(10, 0)
    with pytest.raises(UserInputError, match="seed and epoch must be non-negative"):
        data.epoch_batches(10, 2, seed=-1, epoch=0)
    with pytest.raises(UserInputError, match="at least one example"):
        data.eval_batches(0, 4)
