"""data.placement (`swin_flax.data.placement`, through `open_splits`): auto streams a split
that would not fit, decided from the listing before a single image is decoded, and says why
in one line; device is refused before decoding when it cannot fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from swin_flax.data import ArrayDataset, StreamedDataset, image_folder, open_splits, placement
from swin_flax.data import sources as sources_module
from swin_flax.errors import UserInputError
from swin_flax.settings import DataSettings
from tests.helpers import tiny_image_folder

GIB = 2**30


@pytest.fixture
def folder(tmp_path):
    return tiny_image_folder(tmp_path / "images", n=20)


def settings(root, **changes) -> DataSettings:
    return dataclasses.replace(
        DataSettings(source="image_folder", root=str(root), stored_size=96), **changes
    )


@pytest.fixture
def no_decoding(monkeypatch):
    """Any decode fails the test: what is decided must come from the listing alone."""

    def decode(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(sources_module, "decode_image", decode)
    monkeypatch.setattr(image_folder, "decode_image", decode)


def memory(monkeypatch, device: float, host: float = 100 * GIB):
    monkeypatch.setattr(placement, "device_memory_bytes", lambda: (int(device), "test memory"))
    monkeypatch.setattr(placement, "host_memory_bytes", lambda: int(host))


def test_auto_streams_a_split_that_would_not_fit_without_decoding_it(
    folder, monkeypatch, no_decoding, capsys
):
    # 40 images of 96x96x3 = 1.05 MiB decoded; the device may hold 0.5 MiB of data.
    memory(monkeypatch, device=1 << 20)
    splits = open_splits(settings(folder), seed=0)
    assert isinstance(splits.train, StreamedDataset) and isinstance(splits.test, StreamedDataset)
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "note: data.placement=auto chose stream: the data sets take 1.1 MiB decoded (40 "
        "images) on every device, more than 50% of the 1.0 MiB of test memory"
    )
    assert sum(placement.resident_bytes(d) for d in splits.present()) == 40 * 96 * 96 * 3


def test_auto_streams_when_the_host_cannot_hold_it_either(folder, monkeypatch, no_decoding, capsys):
    memory(monkeypatch, device=80 * GIB, host=4096)
    splits = open_splits(settings(folder, stored_size=0), seed=0)  # side from a header
    assert isinstance(splits.train, StreamedDataset)
    assert "of available host memory" in capsys.readouterr().err
    assert placement.resident_bytes(splits.train) == 20 * 8 * 8 * 3


def test_auto_keeps_what_fits_on_the_device_and_says_so(folder, monkeypatch, capsys):
    memory(monkeypatch, device=80 * GIB)
    splits = open_splits(settings(folder, validation_fraction=0.25), seed=0)
    assert all(isinstance(d, ArrayDataset) for d in splits.present())
    assert [len(d) for d in splits.present()] == [15, 20, 5]
    # (5 validation images cannot hold all 4 classes: the other line names the missing one)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "data.placement" in x]
    assert line.startswith("note: data.placement=auto chose device: 1.1 MiB decoded (40 images)")
    assert "fit in 50% of the 80.00 GiB of test memory and of the 100.00 GiB" in line


def test_device_is_refused_before_decoding_when_it_cannot_fit(folder, monkeypatch, no_decoding):
    memory(monkeypatch, device=1 << 20)
    with pytest.raises(UserInputError, match=r"data.placement=device: .*data.placement=stream"):
        open_splits(settings(folder, placement="device"), seed=0)


def test_stream_is_taken_as_asked_and_digits_stay_resident(folder, monkeypatch, capsys):
    memory(monkeypatch, device=80 * GIB)
    assert isinstance(
        open_splits(settings(folder, placement="stream"), seed=0).train, StreamedDataset
    )
    assert capsys.readouterr().err == ""
    digits = open_splits(DataSettings(source="digits", placement="stream"), seed=0)
    assert isinstance(digits.train, ArrayDataset)
    assert "digits stay resident" in capsys.readouterr().err


def test_only_resident_splits_count_against_the_device(folder, monkeypatch):
    memory(monkeypatch, device=1 << 20)
    streamed = open_splits(settings(folder, placement="stream"), seed=0)
    placement.check_fits_devices(streamed.present())  # batches only: nothing to refuse
    big = ArrayDataset(np.zeros((40, 96, 96, 3), np.uint8), np.zeros(40, np.int32), 1)
    with pytest.raises(UserInputError, match="more than 50% of the 1.0 MiB of test memory"):
        placement.check_fits_devices([big, streamed.test])
