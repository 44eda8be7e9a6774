"""The front of the data layer (`swin_flax.data.load` and the package `swin_flax.data`):
config -> (train, eval). The data set itself, the index batches and each loader have
their own files: test_dataset.py, test_batches.py, test_tfds_source.py,
test_image_folder.py, test_digits.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swin_flax import data
from swin_flax.errors import BadImagesError, UserInputError

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
