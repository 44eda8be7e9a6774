"""Listing an image folder without decoding it (`swin_flax.data.folder_listing`): what the
class folders hold besides images, and the first image's size from its header."""

from __future__ import annotations

import numpy as np

from swin_flax.data.folder_listing import first_image_size, list_image_folder
from tests.data.test_image_folder import _noise, _write_jpeg, _write_png


def test_folders_and_other_files_in_a_class_folder_are_ignored_in_one_summary_line(
    tmp_path, capsys
):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        _write_png(tmp_path / "train" / "cat" / name, rng.integers(0, 256, (4, 4, 3), np.uint8))
    _write_png(tmp_path / "train" / "dog" / "c.png", rng.integers(0, 256, (4, 4, 3), np.uint8))
    _write_png(tmp_path / "train" / "cat" / "more" / "d.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "train" / "cat" / "labels.csv").write_text("a,cat\n")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("x")
    (tmp_path / "train" / "dog" / ".DS_Store").write_bytes(b"\0")  # hidden: not worth a word
    listing = list_image_folder(tmp_path, "train")
    assert len(listing) == 3 and listing.classes == ("cat", "dog")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"note: 3 entries in the class folders of {tmp_path / 'train'} are not read (folders, "
        "and files without an image suffix): cat/labels.csv, cat/more/, dog/notes.txt"
    ]


def test_the_ignored_entries_listed_are_the_first_few(tmp_path, capsys):
    _write_png(tmp_path / "train" / "cat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    for i in range(7):
        (tmp_path / "train" / "cat" / f"x{i}.txt").write_text("x")
    list_image_folder(tmp_path, "train")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: 7 entries") and line.endswith(
        "cat/x0.txt, cat/x1.txt, cat/x2.txt, cat/x3.txt, cat/x4.txt and 2 more"
    )


def test_the_first_images_size_comes_from_its_header(tmp_path):
    _write_jpeg(tmp_path / "train" / "b_dog" / "x.jpg", _noise(20, 30, seed=0))
    _write_jpeg(tmp_path / "train" / "a_cat" / "y.jpg", _noise(40, 50, seed=1))
    (tmp_path / "train" / "a_cat" / "a_notes.txt").write_text("not an image")
    assert first_image_size(tmp_path, "train") == (50, 40)  # (width, height)
    assert first_image_size(tmp_path, "test") is None
