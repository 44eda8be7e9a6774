"""Listed sources (`swin_flax.data.sources`): an image folder listed without a decode, read
by index with the resident loader's own decoder (the same pixels, EXIF and deep modes
included), named by its listing (relative paths, sizes, labels), and its header check."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swin_flax.data import image_folder, images, sources
from swin_flax.data.folder_listing import list_image_folder
from swin_flax.data.image_folder import load_image_folder
from swin_flax.data.sources import ImageFolderSource
from swin_flax.errors import BadImagesError


def awkward_folder(root: Path) -> Path:
    """A 2-class folder of what the decoder treats specially: a photo-sized JPEG (decoded
    in draft mode when shrunk a lot), one with an EXIF rotation, a 16-bit PNG, grayscale."""
    rng = np.random.default_rng(0)
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    cat.mkdir(parents=True)
    dog.mkdir(parents=True)
    smooth = np.linspace(0, 255, 300 * 200 * 3).reshape(200, 300, 3).astype(np.uint8)
    Image.fromarray(smooth).save(cat / "big.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 to show upright
    Image.fromarray(smooth[:120, :80]).save(cat / "rotated.jpg", exif=exif, quality=90)
    deep = (rng.integers(0, 65535, (20, 30))).astype(np.uint16)
    Image.fromarray(deep).save(dog / "deep.png")
    Image.fromarray(rng.integers(0, 256, (25, 25), np.uint8)).save(dog / "gray.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(dog / "rgb.png")
    return root


def test_listing_decodes_nothing_and_reads_the_resident_loaders_pixels(tmp_path, monkeypatch):
    root = awkward_folder(tmp_path)
    resident = load_image_folder(root, "train", image_size=24)
    calls = []
    monkeypatch.setattr(sources, "decode_image", lambda *a: calls.append(a) or 1 / 0)
    source = ImageFolderSource(list_image_folder(root, "train"), 24)
    assert len(source) == 5 and calls == []  # listed, not decoded
    assert source.pixels_per_image() == 24 * 24 and calls == []
    monkeypatch.undo()
    streamed = [source.read(i) for i in range(len(source))]
    np.testing.assert_array_equal(np.stack([image for image, _ in streamed]), resident.images)
    assert [label for _, label in streamed] == resident.labels.tolist() == [0, 0, 1, 1, 1]


def test_unresized_reads_must_share_the_first_images_size(tmp_path):
    root = awkward_folder(tmp_path)
    source = ImageFolderSource(list_image_folder(root, "train"), None)
    assert source.image_shape() == (200, 300, 3)  # big.jpg, the first file
    assert source.pixels_per_image() == 200 * 300  # from its header
    with pytest.raises(
        ValueError, match=r"rotated.jpg is 120x80 but the split's images are 300x200"
    ):
        source.read(1)


def test_the_identity_names_the_listing_not_where_it_lies(tmp_path):
    root = awkward_folder(tmp_path / "a")
    identity = ImageFolderSource(list_image_folder(root, "train"), 24).identity()
    assert identity["count"] == 5 and identity["stored_size"] == 24
    assert identity["decoder"].startswith("Pillow ")
    moved = shutil.copytree(root, tmp_path / "b")
    assert ImageFolderSource(list_image_folder(moved, "train"), 24).identity() == identity
    assert ImageFolderSource(list_image_folder(moved, "train"), 32).identity() != identity
    (moved / "train" / "dog" / "rgb.png").write_bytes(b"\0" * 10)  # another file size
    changed = ImageFolderSource(list_image_folder(moved, "train"), 24).identity()
    assert changed["files"] != identity["files"] and changed["count"] == 5
    (moved / "train" / "dog" / "rgb.png").rename(moved / "train" / "dog" / "renamed.png")
    renamed = ImageFolderSource(list_image_folder(moved, "train"), 24).identity()
    assert renamed["files"] not in (identity["files"], changed["files"])


def test_a_fingerprint_covers_the_examples_a_subset_keeps(tmp_path):
    source = ImageFolderSource(list_image_folder(awkward_folder(tmp_path), "train"), 24)
    everything = sources.fingerprint(source, np.arange(5))
    assert sources.fingerprint(source, np.arange(5)) == everything
    assert sources.fingerprint(source, np.array([0, 2, 4])) != everything


def test_the_header_check_skips_what_a_header_shows_and_leaves_truncated_files(tmp_path):
    root = awkward_folder(tmp_path)
    (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (root / "train" / "dog" / "text.png").write_text("not an image")
    truncated = root / "train" / "dog" / "truncated.jpg"
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:-2000])  # headers whole, pixels cut
    listing = list_image_folder(root, "train")
    with pytest.warns(UserWarning, match=r"(?s)skipped 2 of 8 .*empty.jpg: empty file"):
        source = ImageFolderSource(listing, 24, check_headers=True)
    assert len(source) == 6
    assert sorted(Path(p).name for p in source.skipped_files) == ["empty.jpg", "text.png"]
    names = [p.name for p in source.listing.files]
    assert "truncated.jpg" in names  # only its pixels fail, later
    with pytest.raises(BadImagesError, match="truncated.jpg"):
        source.read(names.index("truncated.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean listing: no warning, nothing left out
        clean = ImageFolderSource(
            list_image_folder(awkward_folder(tmp_path / "c"), "train"), 8, check_headers=True
        )
    assert clean.skipped_files == ()


def test_a_split_whose_every_header_is_bad_is_an_error(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "a.jpg").write_bytes(b"")
    with pytest.raises(BadImagesError, match="none of the 1 image files"):
        ImageFolderSource(list_image_folder(tmp_path, "train"), 8, check_headers=True)


def test_decode_source_fills_one_array_in_order(tmp_path):
    source = ImageFolderSource(list_image_folder(awkward_folder(tmp_path), "train"), 16)
    images_, labels = sources.decode_source(source, np.array([4, 0, 2]), workers=2)
    expected = [source.read(i) for i in (4, 0, 2)]
    np.testing.assert_array_equal(images_, np.stack([image for image, _ in expected]))
    assert labels.dtype == np.int32 and labels.tolist() == [1, 0, 1]
    assert image_folder.decode_image is images.decode_image is sources.decode_image
