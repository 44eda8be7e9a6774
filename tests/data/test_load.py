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
        _write_png(tmp_path / split / "dog" / "good.png", 9)  # two classes: a task
        (tmp_path / split / "cat" / "empty.png").write_bytes(b"")
    config = _data_config(source="image_folder", root=str(tmp_path))
    with pytest.raises(BadImagesError) as info:
        data.load_datasets(config, seed=0)
    assert [path for path, _ in info.value.bad_files] == [
        str(tmp_path / "train" / "cat" / "empty.png"),
        str(tmp_path / "test" / "cat" / "empty.png"),
    ]
    assert str(tmp_path / "train") in str(info.value) and str(tmp_path / "test") in str(info.value)
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        train, test = data.load_datasets(dataclasses.replace(config, skip_bad_images=True), seed=0)
    assert len(train) == len(test) == 2 and train.skipped_files and test.skipped_files


# --------------------------------------------------------------------------------------
# data.random_resized_crop resolved
# --------------------------------------------------------------------------------------


def _photo_folder(root: Path, size: tuple[int, int]) -> Path:
    for name in ("cat", "dog"):
        (root / "train" / name).mkdir(parents=True)
        Image.new("RGB", size).save(root / "train" / name / "a.jpg")
    return root


def test_auto_turns_the_resized_crop_on_for_folders_larger_than_the_model_input(tmp_path):
    from swin_flax.data.augment import ResizedCrop
    from swin_flax.data.load import resized_crop

    root = _photo_folder(tmp_path, (80, 64))  # width 80, height 64: the shorter side counts
    folder = {"source": "image_folder", "root": str(root)}
    assert resized_crop(_data_config(**folder, image_size=56)) == ResizedCrop()  # timm's
    assert resized_crop(_data_config(**folder, image_size=64)) is None  # not larger
    # data.stored_size is what the run stores: it decides without opening an image
    assert resized_crop(_data_config(**folder, stored_size=40, image_size=32)) is not None
    assert resized_crop(_data_config(**folder, stored_size=32, image_size=32)) is None
    # a size unknown without decoding (tfds, digits): the CIFAR recipe unless set on
    assert resized_crop(_data_config(source="tfds", image_size=224)) is None
    crop = resized_crop(_data_config(random_resized_crop="on", crop_scale=(0.35, 1.0)))
    assert crop == ResizedCrop(scale=(0.35, 1.0))
    assert resized_crop(_data_config(**folder, image_size=56, random_resized_crop="off")) is None


def test_the_shipped_configs_keep_the_cifar_recipe(tmp_path):
    """configs/*.py train at their images' own size (or upscale CIFAR): auto stays off."""
    from configs import cifar10, demo, pretrained, swin_m_kd
    from swin_flax.data.load import resized_crop
    from swin_flax.settings import RunSettings

    folders = {name: _photo_folder(tmp_path / name, (32, 32)) for name in ("c10", "src", "tgt")}
    configs = [
        cifar10.get_config(f"root={folders['c10']}"),
        pretrained.get_config(f"source={folders['src']},target={folders['tgt']}"),
        demo.get_config(None),
        swin_m_kd.get_config(None),
    ]
    for config in configs:
        assert resized_crop(RunSettings.from_config(config).data) is None


# --------------------------------------------------------------------------------------
# Classes: at least two, and the ones an evaluation split lacks are named
# --------------------------------------------------------------------------------------


def _folder_with_classes(root: Path, splits: dict[str, tuple[str, ...]]) -> Path:
    for split, classes in splits.items():
        for label, name in enumerate(classes):
            for i in range(4):
                pixels = np.full((8, 8, 3), 40 * label + i, np.uint8)
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


def test_a_training_split_of_one_class_is_refused_in_one_line(tmp_path):
    root = _folder_with_classes(tmp_path, {"train": ("cat",), "test": ("cat",)})
    with pytest.raises(UserInputError) as info:
        data.load_splits(_data_config(source="image_folder", root=str(root)), seed=0)
    assert str(info.value) == (
        f"the training split of {root} holds one class (cat): classification needs at least "
        "two classes, one folder of images each"
    )


def test_a_class_the_test_split_lacks_is_named_in_one_note(tmp_path, capsys):
    root = _folder_with_classes(
        tmp_path, {"train": ("cat", "dog", "ship"), "test": ("cat", "ship")}
    )
    splits = data.load_splits(_data_config(source="image_folder", root=str(root)), seed=0)
    assert splits.test.num_classes == 3
    assert capsys.readouterr().err.splitlines() == [
        "note: the test split has no image of dog (trained on): test top-1 is over the other "
        "2 classes"
    ]
    data.load_splits(
        _data_config(source="image_folder", root=str(root), test_split="train"), seed=0
    )
    assert capsys.readouterr().err == ""  # every class present: nothing to say
