"""The batch of step s (`swin_flax.data.feed`): a resident split and the same split
streamed give identical global batches, in training (across epochs, from any start step)
and in evaluation (the padded last batch masked); each process's rows are one slice."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from swin_flax.data import feed
from swin_flax.data.batches import epoch_batches
from swin_flax.data.image_folder import load_image_folder
from swin_flax.training.distributed import batch_sharded, make_mesh, replicated
from tests.helpers import streamed_folder, tiny_image_folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tiny_image_folder(tmp_path_factory.mktemp("images"), n=20)
    mesh = make_mesh()
    shardings = {"sharding": batch_sharded(mesh), "replicated": replicated(mesh)}
    resident = feed.DataFeed(load_image_folder(root, "train"), **shardings)
    streamed = feed.DataFeed(streamed_folder(root, workers=2), **shardings)
    return resident, streamed


def test_resident_and_streamed_training_batches_are_identical(pair):
    resident, streamed = pair
    assert resident.resident and not streamed.resident
    # 20 examples in batches of 6: 3 steps an epoch; steps 2..8 cross two epoch boundaries.
    runs = [f.train(seed=3, batch_size=6, start_step=2, stop_step=8) for f in pair]
    expected = [epoch_batches(20, 6, seed=3, epoch=e) for e in range(3)]
    labels_of = resident.data.labels
    for step in range(2, 8):
        (ri, rl), (si, sl) = (next(r) for r in runs)
        assert (
            ri.shape == (6, 8, 8, 3) and ri.dtype == np.uint8 and ri.sharding == resident.sharding
        )
        np.testing.assert_array_equal(np.asarray(ri), np.asarray(si))
        np.testing.assert_array_equal(np.asarray(rl), np.asarray(sl))
        epoch, position = divmod(step, 3)
        np.testing.assert_array_equal(np.asarray(rl), labels_of[expected[epoch][position]])
    for r in runs:
        r.close()


def test_resident_and_streamed_evaluation_batches_are_identical_and_masked(pair):
    resident, streamed = pair
    out = [list(f.evaluation(8)) for f in pair]  # 20 examples: 8, 8, 4 + 4 padding
    assert len(out[0]) == len(out[1]) == 3
    for (ri, rl, rm), (si, sl, sm) in zip(*out):
        mask = np.asarray(rm)
        np.testing.assert_array_equal(mask, np.asarray(sm))
        np.testing.assert_array_equal(np.asarray(ri)[mask], np.asarray(si)[mask])
        np.testing.assert_array_equal(np.asarray(rl)[mask], np.asarray(sl)[mask])
    assert np.asarray(out[0][-1][2]).tolist() == [True] * 4 + [False] * 4
    labels = np.concatenate([np.asarray(l)[np.asarray(m)] for _, l, m in out[1]])
    np.testing.assert_array_equal(labels, resident.data.labels)


class FakeSharding:
    """The one method `process_rows` reads: which rows each local device holds."""

    def __init__(self, *spans):
        self.spans = spans

    def addressable_devices_indices_map(self, shape):
        return {i: (slice(*span),) for i, span in enumerate(self.spans)}


def test_a_process_reads_the_contiguous_rows_its_devices_hold():
    assert feed.process_rows(FakeSharding((4, 6), (6, 8)), 8) == slice(4, 8)
    assert feed.process_rows(FakeSharding((None, None)), 8) == slice(0, 8)
    with pytest.raises(ValueError, match="not contiguous"):
        feed.process_rows(FakeSharding((0, 2), (4, 6)), 8)
    mesh = make_mesh()
    assert feed.process_rows(batch_sharded(mesh), 4 * jax.device_count()) == slice(
        0, 4 * jax.device_count()
    )
