"""The user's images for an export (`swin_flax.deploy.image_sets`): calibration chosen by a
seed, the same every time; evaluation labels matched to the checkpoint's classes by name;
bad folders and files as one clear error."""

import numpy as np
import pytest
from PIL import Image

from swin_flax.deploy import image_sets
from swin_flax.errors import BadImagesError, UserInputError


def write_images(folder, count, *, start=0, size=(6, 8)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        pixels = np.full((*size, 3), (i * 37) % 256, np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@pytest.fixture
def train_dir(tmp_path):
    root = tmp_path / "train"
    for name, count in (("cat", 6), ("dog", 4), ("emu", 2)):
        write_images(root / name, count)
    (root / "notes.txt").write_text("not an image")
    return root


def test_calibration_is_the_same_for_a_seed_and_takes_every_class_in_turn(train_dir):
    first = image_sets.calibration_files(train_dir, 6, seed=3)
    assert first == image_sets.calibration_files(train_dir, 6, seed=3)
    # each class folder in turn: two rounds of (cat, dog, emu)
    assert [p.parent.name for p in first] == ["cat", "dog", "emu"] * 2
    others = [image_sets.calibration_files(train_dir, 6, seed=s) for s in range(4, 9)]
    assert any(files != first for files in others)  # another seed, other images
    assert len(image_sets.calibration_files(train_dir, 100)) == 12  # all there are


def test_calibration_images_are_preprocessed_and_deterministic(train_dir, capsys):
    images, source = image_sets.calibration_images(train_dir, 16, count=5, seed=1)
    again, _ = image_sets.calibration_images(train_dir, 16, count=5, seed=1)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, again)
    assert source == f"5 images from {train_dir} (seed 1)"
    image_sets.calibration_images(train_dir, 16, count=50)
    assert "holds only 12 images; calibrating on all" in capsys.readouterr().err


def test_a_flat_calibration_folder_works(tmp_path):
    write_images(tmp_path / "flat", 3)
    assert len(image_sets.calibration_files(tmp_path / "flat", 10)) == 3


@pytest.mark.parametrize("case", ["missing", "file", "empty", "zero count"])
def test_a_bad_calibration_folder_is_one_clear_error(case, tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "a.jpg").write_bytes(b"x")
    path, count, message = {
        "missing": (tmp_path / "nope", 5, "no such folder"),
        "file": (tmp_path / "a.jpg", 5, "is a file"),
        "empty": (tmp_path / "empty", 5, "holds no images"),
        "zero count": (tmp_path, 0, "at least 1"),
    }[case]
    with pytest.raises(UserInputError, match=message):
        image_sets.calibration_files(path, count)


def test_unreadable_calibration_images_are_listed_together(train_dir):
    (train_dir / "cat" / "zz_bad.png").write_bytes(b"\x89PNG broken")
    (train_dir / "dog" / "zz_bad.png").write_bytes(b"")
    with pytest.raises(BadImagesError, match="2 of 14 images cannot be read") as err:
        image_sets.calibration_images(train_dir, 8, count=100)
    assert {p.split("/")[-2] for p, _ in err.value.bad_files} == {"cat", "dog"}


NAMES = ["dog", "cat", "emu"]  # the checkpoint's order: not the folders' sorted order


def test_evaluation_labels_follow_the_checkpoint_class_names(train_dir):
    eval_set = image_sets.evaluation_set(train_dir, NAMES, 3)
    assert len(eval_set) == 12
    # sorted folders cat (6), dog (4), emu (2) -> the checkpoint's indices 1, 0, 2
    assert eval_set.labels.tolist() == [1] * 6 + [0] * 4 + [2] * 2
    batches = list(eval_set.batches(16, batch_size=5))
    assert [len(labels) for _, labels in batches] == [5, 5, 2]
    assert np.concatenate([labels for _, labels in batches]).tolist() == eval_set.labels.tolist()
    assert batches[0][0].shape == (5, 16, 16, 3)
    again = list(eval_set.batches(16, batch_size=5))  # the second pass reads the cache
    assert all(a[0] is b[0] for a, b in zip(batches, again))


def test_the_parity_sample_takes_each_class_in_turn(train_dir):
    eval_set = image_sets.evaluation_set(train_dir, NAMES, 3)
    sample = eval_set.sample(16, count=4)
    assert sample.shape == (4, 16, 16, 3)
    # first cat, first dog, first emu, second cat: pixel values 0, 0, 0, 37 (see write_images)
    raw = [int(round(v)) for v in sample[:, 0, 0, 0] * 0.229 * 255 + 0.485 * 255]
    assert raw == [0, 37, 0, 0]  # in file order: cat 000, cat 001, dog 000, emu 000


def test_without_class_names_sorted_folders_are_the_classes_and_it_is_said(train_dir, capsys):
    eval_set = image_sets.evaluation_set(train_dir, None, 3)
    assert eval_set.labels.tolist() == [0] * 6 + [1] * 4 + [2] * 2
    assert "stores no class names: the classes of" in capsys.readouterr().err


def test_without_class_names_a_subset_of_the_classes_is_refused(train_dir):
    """Which output a folder is cannot be known without names: positions would score a
    cat/ship folder of a cat/dog/ship model against cat/dog (issue 29: 18.75% for 31.25%)."""
    with pytest.raises(UserInputError) as caught:
        image_sets.evaluation_set(train_dir, None, 10)
    message = str(caught.value)
    assert "has 3 classes but the model has 10 outputs, and the checkpoint stores no class" in (
        message
    )
    assert "evaluate on all 10 classes, or store the names" in message


def test_with_class_names_a_subset_of_the_classes_is_matched_by_name(train_dir):
    for p in (train_dir / "dog").iterdir():
        p.unlink()
    (train_dir / "dog").rmdir()
    eval_set = image_sets.evaluation_set(train_dir, ["cat", "dog", "emu"], 3)
    assert eval_set.labels.tolist() == [0] * 6 + [2] * 2  # emu is output 2, not 1


@pytest.mark.parametrize(
    "case,message",
    [
        ("unknown class", r"has classes \['emu'\] that the checkpoint does not know"),
        ("too many classes", "has 3 classes but the model has 2 outputs"),
        ("split root", r"holds splits \['train'\]\? give one of them"),
        ("no class folders", "holds no class folders"),
        ("empty class", "holds no images"),
        ("missing", "no such folder"),
    ],
)
def test_a_bad_evaluation_folder_is_one_clear_error(case, message, train_dir, tmp_path):
    spec, names, classes = {
        "unknown class": (train_dir, ["cat", "dog"], 2),
        "too many classes": (train_dir, None, 2),
        "split root": (tmp_path, NAMES, 3),
        "no class folders": (train_dir / "cat", NAMES, 3),
        "empty class": (train_dir, NAMES, 3),
        "missing": (tmp_path / "nope", NAMES, 3),
    }[case]
    if case == "empty class":
        for p in (train_dir / "dog").iterdir():
            p.unlink()
    with pytest.raises(UserInputError, match=message):
        image_sets.evaluation_set(spec, names, classes)


def test_an_unreadable_evaluation_image_is_named_after_the_pass(train_dir):
    (train_dir / "dog" / "zz.png").write_bytes(b"not a png")
    eval_set = image_sets.evaluation_set(train_dir, NAMES, 3)
    seen = []
    with pytest.raises(BadImagesError, match="1 of 13 images cannot be read") as err:
        for _, labels in eval_set.batches(8, batch_size=4):
            seen += labels.tolist()
    assert len(seen) == 12 and err.value.bad_files[0][0].endswith("dog/zz.png")


def test_a_tfds_split_is_named_with_its_prefix(monkeypatch):
    from swin_flax.data import tfds_source
    from swin_flax.data.dataset import ArrayDataset

    calls = []

    def fake_load(name, split, *args, **kwargs):
        calls.append((name, split))
        images = np.zeros((4, 5, 5, 3), np.uint8)
        labels = np.array([0, 1, 2, 1], np.int32)
        return ArrayDataset(images, labels, 3, class_names=("cat", "dog", "emu"))

    monkeypatch.setattr(tfds_source, "load_tfds", fake_load)
    eval_set = image_sets.evaluation_set("tfds:pets", NAMES, 3)
    assert calls == [("pets", "test")]
    assert eval_set.labels.tolist() == [1, 0, 2, 0]  # cat, dog, emu, dog in NAMES' order
    assert "TFDS pets[test]" in eval_set.description
    image_sets.evaluation_set("tfds:pets:train[:10%]", None, 3)
    assert calls[-1] == ("pets", "train[:10%]")
    with pytest.raises(UserInputError, match="needs a data set name"):
        image_sets.evaluation_set("tfds:", NAMES, 3)
