"""What an export reads before it writes (`swin_flax.deploy.inputs`): the parity check's
images (given files, the user's data, else synthetic), an unwritable output folder refused
before any work, int8 checked on images it was not calibrated on, and calibration refused
when too small for one batch or shared with --evaluate."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import swin_flax
from swin_flax.deploy import inputs
from swin_flax.errors import UserInputError
from swin_flax.weights.checkpoint import save_checkpoint

NAMES = ["cat", "dog", "ship"]


def test_check_images_are_the_given_files_then_the_users_data_then_synthetic(tmp_path, capsys):
    images, source = inputs.load_check_images(32)
    assert source == "synthetic images" and images.shape == (8, 32, 32, 3)
    assert "synthetic" in capsys.readouterr().err
    np.testing.assert_array_equal(images, inputs.load_check_images(32)[0])  # deterministic
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "a.png")
    images, source = inputs.load_check_images(32, [tmp_path / "a.png"])
    assert images.shape == (1, 32, 32, 3) and "given" in source
    users = (np.zeros((3, 32, 32, 3), np.float32), "3 calibration images")
    capsys.readouterr()
    assert inputs.load_check_images(32, None, users) is users
    assert capsys.readouterr().err == ""  # no synthetic-batch note when the user's data is there


def unwritable_folder(tmp_path) -> Path:
    """A folder this process cannot create files in: a read-only one for a normal user;
    for root (which ignores permissions) /sys, where even root gets EACCES."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys")
    try:
        (folder / "swin_flax-probe").open("w").close()
    except OSError:
        return folder
    pytest.skip("no folder here refuses root's writes")


def test_an_unwritable_output_folder_is_refused_before_anything_is_read(tmp_path):
    folder = unwritable_folder(tmp_path)
    missing_checkpoint = tmp_path / "never-read"
    with pytest.raises(UserInputError, match=rf"^cannot write into {folder} \("):
        inputs.check_arguments("onnx", folder / "m.onnx", 1, "fp32", None)
    from swin_flax.deploy.export import export_checkpoint

    with pytest.raises(UserInputError, match="cannot write into") as caught:
        export_checkpoint(missing_checkpoint, folder / "m.zip", "stablehlo")
    assert "give the file to write in a folder you can write to" in str(caught.value)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 3-class checkpoint; train/ (6 images a class), test/ (4 a class), three/ (3)."""
    root = tmp_path_factory.mktemp("inputs")
    model = swin_flax.create_model("swin_pico", num_classes=3)
    save_checkpoint(root / "ckpt", model, swin_flax.init_params(model, 0), class_names=NAMES)
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 4), ("three", 1)):
        for name in NAMES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}{i}.png")
    return root


def int8_inputs(root, **kwargs):
    return inputs.export_inputs(root / "ckpt", precision="int8", **kwargs)


def test_int8_parity_is_checked_on_images_it_was_not_calibrated_on(data):
    got = int8_inputs(data, batch=1, calibration=data / "train", calibration_count=8)
    assert len(got.calibration.files) == 8 and len(got.check_images) == 10
    assert got.check_source == "10 images of the calibration folder not calibrated on"
    flat = got.calibration.images.reshape(8, -1)
    for image in got.check_images.reshape(10, -1):  # none of them is a calibration image
        assert not any(np.array_equal(image, c) for c in flat)
    # the calibration itself is the same with or without the held-out images
    same = inputs.image_sets.calibration_files(data / "train", 8, 0)
    assert got.calibration.files == same


def test_a_calibration_folder_with_no_other_images_says_the_check_is_on_them(data, capsys):
    got = int8_inputs(data, batch=1, calibration=data / "three")
    assert got.check_source.startswith("3 calibration images themselves: not checked on")
    np.testing.assert_array_equal(got.check_images, got.calibration.images)
    assert "parity check runs on those" in capsys.readouterr().err


def test_too_few_calibration_images_for_one_batch_is_one_clear_error(data):
    with pytest.raises(
        UserInputError,
        match=r"int8 calibrates on whole batches of the export's batch size 4, but "
        r"--calibration \S+three gives 3 image\(s\); give at least 4",
    ):
        int8_inputs(data, batch=4, calibration=data / "three")
    with pytest.raises(UserInputError, match="batch size 5, but .* gives 2 image"):
        int8_inputs(data, batch=5, calibration=data / "train", calibration_count=2)


@pytest.mark.parametrize("case", ["same folder", "a class folder of it", "a copy"])
def test_int8_calibrated_on_the_images_evaluate_scores_is_refused(case, data, tmp_path):
    calibration = {
        "same folder": data / "test",
        "a class folder of it": data / "test" / "dog",
        "a copy": tmp_path / "copy",
    }[case]
    if case == "a copy":  # other paths, the same bytes: one test image among training ones
        calibration.mkdir()
        for path in sorted((data / "train" / "cat").iterdir()):
            (calibration / path.name).write_bytes(path.read_bytes())
        (calibration / "x.png").write_bytes((data / "test" / "ship" / "test2.png").read_bytes())
    with pytest.raises(UserInputError) as caught:
        int8_inputs(data, batch=1, calibration=calibration, evaluate=data / "test")
    message = str(caught.value)
    assert message.startswith("--calibration and --evaluate share ")
    assert "Calibrate on other images of the task, e.g. its training split" in message
    got = int8_inputs(data, batch=1, calibration=data / "train", evaluate=data / "test")
    assert len(got.calibration.files) == 18 and got.check_source.startswith("first images of")
