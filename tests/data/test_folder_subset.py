"""swin_flax/data/folder_subset.py: a seeded, per-class subset of an image folder."""

import numpy as np
import pytest
from PIL import Image

from swin_flax.data import folder_subset
from swin_flax.errors import UserInputError


def make_folder(root, classes=("a", "b", "c")):
    per_split = {"train": 6, "test": 3}
    for split, count in per_split.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(
                    root / split / name / f"{i:03d}.png"
                )
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    return root


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


def test_chosen_classes_and_counts_the_same_for_the_same_seed(tmp_path):
    source = make_folder(tmp_path / "src")
    counts = folder_subset.make_subset(
        source, tmp_path / "out", classes=["c", "a"], per_class={"train": 2, "test": 0}
    )
    assert counts == {"train": 4, "test": 6}
    chosen = files(tmp_path / "out")
    assert sum(p.startswith("train/a/") for p in chosen) == 2
    assert not any(p.startswith(("train/b", "test/b")) for p in chosen)
    assert (tmp_path / "out" / "train" / "a").is_dir() and not (
        tmp_path / "out" / "train" / "b"
    ).exists()
    folder_subset.make_subset(
        source, tmp_path / "again", classes=["c", "a"], per_class={"train": 2, "test": 0}
    )
    assert files(tmp_path / "again") == chosen
    other = folder_subset.make_subset(
        source, tmp_path / "other", classes=["c", "a"], per_class={"train": 2, "test": 0}, seed=5
    )
    assert other == counts and files(tmp_path / "other") != chosen
    link = next((tmp_path / "out" / "train" / "a").iterdir())
    assert link.is_symlink() and link.resolve().parent == (source / "train" / "a").resolve()


def test_missing_classes_are_one_error_and_a_full_output_is_refused(tmp_path):
    source = make_folder(tmp_path / "src")
    with pytest.raises(UserInputError, match="no class folder train/zebra, test/zebra"):
        folder_subset.make_subset(
            source, tmp_path / "out", classes=["a", "zebra"], per_class={"train": 1, "test": 1}
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserInputError, match="exists and is not empty"):
        folder_subset.make_subset(source, tmp_path / "full", classes=["a"], per_class={"train": 1})


def test_the_cli_copies_when_asked(tmp_path, capsys):
    source = make_folder(tmp_path / "src")
    code = folder_subset.main(
        [str(source), str(tmp_path / "out"), "--classes", "b", "--train-per-class", "3", "--copy"]
    )
    assert code == 0 and "3 train images, 3 test images" in capsys.readouterr().out
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*.png"))
