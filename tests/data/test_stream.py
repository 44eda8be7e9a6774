"""Streamed splits (`swin_flax.data.stream`): batches of exactly the asked positions, in
order, decoded by grain threads a bounded number ahead; padding rows; a file that fails
mid-stream named in one error; the threads gone after close()."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from swin_flax.data import sources
from swin_flax.data.image_folder import load_image_folder
from swin_flax.data.stream import PADDING
from swin_flax.errors import BadImagesError
from tests.helpers import streamed_folder, tiny_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_image_folder(tmp_path_factory.mktemp("images"), n=24)


def test_batches_hold_the_asked_positions_in_order(folder):
    data = streamed_folder(folder, workers=3, prefetch=2)
    resident = load_image_folder(folder, "train")
    steps = {s: np.random.default_rng(s).permutation(len(data))[:4] for s in range(5, 11)}
    batches = data.local_batches(steps.__getitem__, 5, 11)
    try:
        for step in range(5, 11):
            images, labels = next(batches)
            assert images.dtype == np.uint8 and labels.dtype == np.int32
            np.testing.assert_array_equal(images, resident.images[steps[step]])
            np.testing.assert_array_equal(labels, resident.labels[steps[step]])
        with pytest.raises(StopIteration):
            next(batches)
    finally:
        batches.close()


def test_padding_rows_are_zero_images_and_label_zero(folder):
    data = streamed_folder(folder)
    batches = data.local_batches(lambda step: np.array([3, PADDING]), 0, 1)
    images, labels = next(batches)
    batches.close()
    assert images[1].max() == 0 and labels[1] == 0 and images[0].max() > 0


def test_the_decoding_runs_a_bounded_number_of_batches_ahead(folder, monkeypatch):
    read = sources.ImageFolderSource.read
    started = []
    monkeypatch.setattr(
        sources.ImageFolderSource, "read", lambda self, i: started.append(i) or read(self, i)
    )
    data = streamed_folder(folder, workers=2, prefetch=2)
    batches = data.local_batches(lambda step: np.arange(4) + 4 * (step % 6), 0, 50)
    next(batches)
    time.sleep(0.5)  # let the threads run as far ahead as they may
    assert len(started) <= (1 + 2) * 4 + 2  # the batch taken, 2 prefetched, one per thread
    batches.close()


def test_a_file_that_fails_mid_stream_is_named_and_close_stops_the_threads(folder):
    data = streamed_folder(folder, workers=2)
    victim = data.source.listing.files[7]
    victim_bytes = victim.read_bytes()
    victim.write_bytes(b"")
    try:
        batches = data.local_batches(lambda step: np.arange(4) + 4 * step, 0, 6)
        next(batches)  # rows 0-3
        with pytest.raises(BadImagesError, match=f"{victim.name}: not a readable image"):
            next(batches)  # rows 4-7
        batches.close()
    finally:
        victim.write_bytes(victim_bytes)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _grain_threads():
        time.sleep(0.05)
    assert _grain_threads() == []


def _grain_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("grain")]


def test_take_labels_and_resident_follow_the_positions(folder):
    data = streamed_folder(folder, size=4)
    part = data.take(np.array([5, 1, 9]))
    assert len(part) == 3 and part.num_classes == 4
    resident = load_image_folder(folder, "train", image_size=4)
    np.testing.assert_array_equal(part.labels, resident.labels[[5, 1, 9]])
    decoded = part.resident()
    np.testing.assert_array_equal(decoded.images, resident.images[[5, 1, 9]])
    assert decoded.fingerprint == part.fingerprint != data.fingerprint
    assert part.resident_bytes() == 3 * 4 * 4 * 3 == decoded.images.nbytes
