"""Tests for the data sets (`swin_flax.data`) and on-device augmentation (`swin_flax.augment`)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import warnings
import weakref
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from swin_flax import augment, data

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _shared_data_dir() -> Path:
    override = os.environ.get("SWIN_FLAX_SHARED_DATA")
    return Path(override) if override else REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """The connectivity probe honours proxy variables; keep the host's out of the tests."""
    for scheme in ("https", "http", "all"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------------------
# ArrayDataset and the validation split
# --------------------------------------------------------------------------------------


def test_array_dataset_rejects_bad_inputs():
    images = np.zeros((3, 4, 4, 3), np.uint8)
    labels = np.zeros(3, np.int32)
    assert len(data.ArrayDataset(images, labels, 2)) == 3
    with pytest.raises(ValueError, match="uint8"):
        data.ArrayDataset(images.astype(np.float32), labels, 2)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        data.ArrayDataset(np.zeros((3, 4, 4, 1), np.uint8), labels, 2)
    with pytest.raises(ValueError, match="int32"):
        data.ArrayDataset(images, labels.astype(np.int64), 2)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        data.ArrayDataset(images, np.zeros(2, np.int32), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        data.ArrayDataset(images, np.array([0, 1, 2], np.int32), 2)
    with pytest.raises(ValueError, match="class_names"):
        data.ArrayDataset(images, labels, 2, class_names=("a",))


def test_split_train_validation_is_disjoint_sized_and_seeded():
    ids = np.arange(50)
    images = np.broadcast_to(ids[:, None, None, None], (50, 2, 2, 3)).astype(np.uint8)
    ds = data.ArrayDataset(images, ids.astype(np.int32), num_classes=50)  # label = example id
    train, val = data.split_train_validation(ds, 0.2, seed=3)
    assert (len(train), len(val)) == (40, 10)
    assert set(train.labels).isdisjoint(val.labels)
    assert set(train.labels) | set(val.labels) == set(range(50))
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], train.labels)  # pairs kept
    assert train.num_classes == val.num_classes == 50
    again_train, again_val = data.split_train_validation(ds, 0.2, seed=3)
    np.testing.assert_array_equal(again_val.labels, val.labels)
    np.testing.assert_array_equal(again_train.images, train.images)
    _, other_val = data.split_train_validation(ds, 0.2, seed=4)
    assert set(other_val.labels) != set(val.labels)
    with pytest.raises(ValueError, match="non-empty"):
        data.split_train_validation(ds, 0.001, seed=0)


# --------------------------------------------------------------------------------------
# TensorFlow Datasets
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_load_tfds_cifar100_under_mock_data(tfds, monkeypatch):
    # mock_data points the builder at metadata without prepared files and turns
    # download_and_prepare into a no-op, so load_tfds takes its download path: report
    # the network as up to let it get there.
    monkeypatch.setattr(data, "network_available", lambda timeout=None: True)
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_tfds("cifar100", "train", data_dir="/nonexistent/tfds")
    assert ds.images.shape == (12, 32, 32, 3)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
    assert ds.num_classes == 100 and len(ds.class_names) == 100
    assert ds.labels.min() >= 0 and ds.labels.max() < 100
    assert ds.images.std() > 0  # random mock pixels, not an all-zero buffer


@pytest.fixture(scope="module")
def tiny_gray_builder(tfds):
    """A 3-class grayscale data set prepared as array_record without TensorFlow.

    Example i is an 8x8 image whose pixels are all 10 * i, labelled i % 3, so a test can
    check that every image arrives with its own label whatever order TFDS stores them in.
    """

    class TinyGraySwinFlaxTest(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=["zero", "one", "two"]),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(range(12)),
                "test": self._generate_examples(range(12, 18)),
            }

        def _generate_examples(self, ids):
            for i in ids:  # PIL images: TFDS encodes them with PIL, numpy arrays need TF
                image = Image.fromarray(np.full((8, 8), 10 * i, np.uint8))
                yield i, {"image": image, "label": i % 3}

    return "tiny_gray_swin_flax_test"


def test_load_tfds_reads_array_record_and_expands_grayscale(tfds, tiny_gray_builder, tmp_path):
    builder = tfds.builder(tiny_gray_builder, data_dir=tmp_path)
    builder.download_and_prepare(file_format="array_record")
    ds = data.load_tfds(tiny_gray_builder, "train", data_dir=str(tmp_path), download=False)
    assert ds.images.shape == (12, 8, 8, 3)
    assert ds.class_names == ("zero", "one", "two") and ds.num_classes == 3
    ids = ds.images[:, 0, 0, 0].astype(np.int32) // 10
    assert sorted(ids) == list(range(12))
    np.testing.assert_array_equal(ds.labels, ids % 3)
    expected = np.broadcast_to(10 * ids[:, None, None, None], ds.images.shape)
    np.testing.assert_array_equal(ds.images, expected)
    head = data.load_tfds(tiny_gray_builder, "test[:50%]", data_dir=str(tmp_path), download=False)
    assert len(head) == 3
    assert set(head.images[:, 0, 0, 0] // 10) <= set(range(12, 18))


def test_load_tfds_offline_fails_fast_with_instructions(tfds, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "network_available", lambda timeout=None: False)

    def no_download(*args, **kwargs):
        raise AssertionError("load_tfds must not attempt a download when offline")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    start = time.monotonic()
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load_tfds("cifar100", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert "cifar100" in message and str(tmp_path) in message
    assert "tfds build cifar100" in message and "no network" in message
    with pytest.raises(data.DatasetUnavailableError, match="download=False"):
        data.load_tfds("cifar100", "test", data_dir=str(tmp_path), download=False)


def test_load_tfds_unknown_name_suggests_close_names(tfds):
    expected = "Unknown TFDS data set 'cifar1000'.*cifar100.*list_builders"
    with pytest.raises(ValueError, match=expected):
        data.load_tfds("cifar1000", "train")


def test_load_tfds_missing_feature_is_reported_before_download(tfds, tmp_path):
    with pytest.raises(ValueError, match="no feature 'pixels'.*coarse_label"):
        data.load_tfds("cifar100", "train", data_dir=str(tmp_path), image_key="pixels")


def _listening_socket() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_network_available_probes_hosts_and_proxy(monkeypatch):
    server = _listening_socket()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    try:
        monkeypatch.setattr(data, "_PROBE_HOSTS", (("127.0.0.1", closed_port),))
        assert data.network_available(timeout=2.0) is False
        hosts = (("127.0.0.1", closed_port), server.getsockname())
        monkeypatch.setattr(data, "_PROBE_HOSTS", hosts)
        assert data.network_available(timeout=2.0) is True
        # Behind a proxy only the proxy is probed.
        monkeypatch.setattr(data, "_PROBE_HOSTS", (("127.0.0.1", closed_port),))
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert data.network_available(timeout=2.0) is True
    finally:
        server.close()


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _solid(value: int, size: int = 6) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_load_image_folder_labels_and_pixels(tmp_path):
    _write_png(tmp_path / "train" / "dog" / "b.png", _solid(20))
    _write_png(tmp_path / "train" / "dog" / "a.png", _solid(10))
    _write_png(tmp_path / "train" / "cat" / "x.png", _solid(30))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    _write_png(tmp_path / "test" / "dog" / "c.png", np.full((6, 6), 40, np.uint8))  # grayscale
    train = data.load_image_folder(tmp_path, "train")
    assert train.class_names == ("cat", "dog")  # sorted, not creation order
    np.testing.assert_array_equal(train.labels, [0, 1, 1])
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], [30, 10, 20])  # files sorted
    test = data.load_image_folder(tmp_path, "test")  # has no "cat": labels follow train
    assert test.class_names == ("cat", "dog") and test.num_classes == 2
    np.testing.assert_array_equal(test.labels, [1])
    np.testing.assert_array_equal(test.images, np.full((1, 6, 6, 3), 40, np.uint8))
    resized = data.load_image_folder(tmp_path, "train", image_size=4)
    assert resized.images.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(resized.images[:, 0, 0, 0], [30, 10, 20])  # solid stays solid


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_image_folder(tmp_path / "missing", "train")
    _write_png(tmp_path / "train" / "cat" / "a.png", _solid(1))
    with pytest.raises(FileNotFoundError, match="test"):
        data.load_image_folder(tmp_path, "test")
    _write_png(tmp_path / "test" / "bird" / "a.png", _solid(1))
    with pytest.raises(ValueError, match=r"\['bird'\].*not among"):
        data.load_image_folder(tmp_path, "test")
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match="dog holds no images"):
        data.load_image_folder(tmp_path, "train")
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "dog").rmdir()
    (tmp_path / "train" / "cat" / "a.png").unlink()
    (tmp_path / "train" / "cat").rmdir()
    with pytest.raises(ValueError, match="no class folders"):
        data.load_image_folder(tmp_path, "val")
    _write_png(tmp_path / "val" / "cat" / "a.png", _solid(1, size=6))
    _write_png(tmp_path / "val" / "cat" / "b.png", _solid(1, size=7))
    with pytest.raises(ValueError, match="different sizes.*data.stored_size=N.*image_size"):
        data.load_image_folder(tmp_path, "val", class_names=["cat"])
    resized = data.load_image_folder(tmp_path, "val", 5, class_names=["cat"])
    assert resized.images.shape == (2, 5, 5, 3)


def _write_jpeg(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_blank_png(path: Path, width: int, height: int) -> None:
    """A valid all-black 1-bit PNG of any size in a few KB, compressed row by row: a
    12000x12000 image made with PIL would take 144 MB of memory."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _plain_decode(path: Path, size: int | None = None) -> np.ndarray:
    """What the loader must produce: full decode to RGB, then a bilinear resize."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if size is not None:
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


@pytest.fixture
def folder_with_bad_images(tmp_path) -> tuple[Path, dict[str, str]]:
    """train/{cat,dog}: 3 good images (12x10 JPEG, 8x8 PNGs) and one file of each
    kind of damage, with the reason the loader must give for it."""
    cat, dog = tmp_path / "train" / "cat", tmp_path / "train" / "dog"
    _write_jpeg(cat / "a_good.jpg", _noise(10, 12, seed=1))
    _write_png(cat / "c_good.png", _noise(8, 8, seed=2))
    _write_png(dog / "b_good.png", _noise(8, 8, seed=3))
    _write_jpeg(cat / "b_truncated.jpg", _noise(64, 64, seed=4))
    whole = (cat / "b_truncated.jpg").read_bytes()
    (cat / "b_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (cat / "d_empty.jpg").write_bytes(b"")
    (dog / "a_text.jpg").write_text("this is not a JPEG\n")
    _write_blank_png(dog / "c_bomb.png", 12000, 12000)  # 144M px: PIL alone only warns
    _write_blank_png(dog / "d_huge.png", 14000, 14000)  # 196M px: PIL refuses it
    reasons = {
        str(cat / "b_truncated.jpg"): "cannot decode (OSError: image file is truncated",
        str(cat / "d_empty.jpg"): "empty file",
        str(dog / "a_text.jpg"): "not an image file PIL can read",
        str(dog / "c_bomb.png"): (
            "12000x12000 = 144,000,000 pixels, over the limit of 89,478,485 "
            "(PIL.Image.MAX_IMAGE_PIXELS)"
        ),
        str(dog / "d_huge.png"): (
            "cannot decode (DecompressionBombError: Image size (196000000 pixels) exceeds "
            "limit of 178956970 pixels"
        ),
    }
    return tmp_path, reasons


def test_load_image_folder_reports_every_bad_file_in_one_error(folder_with_bad_images):
    root, reasons = folder_with_bad_images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(data.BadImagesError) as info:
            data.load_image_folder(root, "train", image_size=8)
    assert isinstance(info.value, data.UserInputError)
    message = str(info.value)
    assert message.startswith(f"5 of 8 image files in {root / 'train'} cannot be read:\n")
    assert "data.skip_bad_images=True" in message and "skip_bad=True" in message
    assert [path for path, _ in info.value.bad_files] == sorted(reasons)  # file order
    for path, reason in info.value.bad_files:
        assert reason.startswith(reasons[path]), (path, reason)
        assert f"  {path}: {reason}\n" in message
    assert "good" not in message
    # The bomb is rejected from its header: PIL's own warning is not passed on.
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_load_image_folder_skip_bad_warns_and_records_skipped_files(folder_with_bad_images):
    root, reasons = folder_with_bad_images
    with pytest.warns(UserWarning, match=r"skipped 5 of 8 image files") as caught:
        ds = data.load_image_folder(root, "train", image_size=8, skip_bad=True, workers=2)
    assert all(path in str(caught[0].message) for path in reasons)
    assert ds.skipped_files == tuple(sorted(reasons))
    assert ds.class_names == ("cat", "dog")
    np.testing.assert_array_equal(ds.labels, [0, 0, 1])
    good = [root / "train" / "cat" / "a_good.jpg", root / "train" / "cat" / "c_good.png",
            root / "train" / "dog" / "b_good.png"]  # fmt: skip
    np.testing.assert_array_equal(ds.images, np.stack([_plain_decode(p, 8) for p in good]))
    assert ds.take(np.array([2])).skipped_files == ds.skipped_files


def test_load_image_folder_bad_file_listing_is_capped_and_all_bad_is_an_error(tmp_path):
    for index in range(23):
        (tmp_path / "train" / "cat").mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / "cat" / f"{index:02d}.jpg").write_bytes(b"")
    with pytest.raises(data.BadImagesError, match="none of the 23 image files") as info:
        data.load_image_folder(tmp_path, "train", skip_bad=True)  # nothing left to skip to
    assert len(info.value.bad_files) == 23
    _write_png(tmp_path / "train" / "cat" / "99.png", _solid(5))
    with pytest.raises(data.BadImagesError) as info:
        data.load_image_folder(tmp_path, "train")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("23 of 24 image files")
    assert lines[20].endswith("19.jpg: empty file") and lines[21] == "  ... and 3 more"
    with pytest.warns(UserWarning, match="skipped 23 of 24"):
        ds = data.load_image_folder(tmp_path, "train", skip_bad=True)
    np.testing.assert_array_equal(ds.images, _solid(5)[None])
    assert len(ds.skipped_files) == 23 and ds.skipped_files[0].endswith("00.jpg")


def test_load_image_folder_pixel_limit_follows_pil(tmp_path, monkeypatch):
    _write_png(tmp_path / "train" / "cat" / "a.png", _noise(40, 30, seed=0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(data.BadImagesError, match=r"30x40 = 1,200 pixels, over the limit of 1,000"):
        data.load_image_folder(tmp_path, "train")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's way to allow any size
    assert data.load_image_folder(tmp_path, "train").image_shape == (40, 30, 3)


def test_blank_png_helper_writes_a_valid_png(tmp_path):
    """The bomb tests rely on the file being a real PNG that only its size makes bad."""
    _write_blank_png(tmp_path / "bomb.png", 12000, 12000)
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(tmp_path / "bomb.png") as image:
            assert (image.size, image.mode) == ((12000, 12000), "1")
            image.verify()  # checks every chunk's CRC without decoding
    _write_blank_png(tmp_path / "small.png", 9, 3)
    np.testing.assert_array_equal(_plain_decode(tmp_path / "small.png"), np.zeros((3, 9, 3)))


def test_load_image_folder_mixed_sizes_name_the_file_in_file_order(tmp_path):
    # 70 files span two pool tasks of 64: the second task meets its mismatch (66) long
    # before the first task reaches 60, yet 60 is the one reported, the first in file order.
    for index in range(70):
        size = (5, 7) if index in (60, 66) else (4, 4)
        _write_png(tmp_path / "train" / "cat" / f"{index:02d}.png", np.zeros((*size, 3), np.uint8))
    with pytest.raises(data.UserInputError) as info:
        data.load_image_folder(tmp_path, "train", workers=2)
    cat = tmp_path / "train" / "cat"
    assert str(info.value) == (
        f"images in {tmp_path / 'train'} have different sizes: {cat / '60.png'} is 7x5 but "
        f"{cat / '00.png'} is 4x4 (width x height); set data.stored_size=N (config) / "
        "image_size=N (load_image_folder, load_tfds) to resize them all to N x N"
    )
    assert data.load_image_folder(tmp_path, "train", 6).image_shape == (6, 6, 3)


def test_stack_images_mixed_sizes_name_the_config_key():
    images = [np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8)]
    with pytest.raises(data.UserInputError, match=r"\(4, 4, 3\), \(5, 4, 3\).*data\.stored_size=N"):
        data._stack_images(images, None, "digits")


def test_load_image_folder_parallel_equals_serial_plain_decode(tmp_path):
    """150 files of varied sizes and formats over 3 classes, more than two pool tasks:
    every row must be its own file's image, in file order."""
    expected, expected_labels = [], []
    for index in range(150):
        label = index % 3
        height, width = 10 + index % 7, 12 + index % 5  # under twice the target: no draft
        path = tmp_path / "train" / f"class{label}" / f"{index:03d}.{'png' if index % 2 else 'jpg'}"
        (_write_png if index % 2 else _write_jpeg)(path, _noise(height, width, seed=index))
    for label in range(3):
        for path in sorted((tmp_path / "train" / f"class{label}").iterdir()):
            expected.append(_plain_decode(path, 9))
            expected_labels.append(label)
    for workers in (1, 4):
        ds = data.load_image_folder(tmp_path, "train", image_size=9, workers=workers)
        np.testing.assert_array_equal(ds.images, np.stack(expected))
        np.testing.assert_array_equal(ds.labels, expected_labels)
        assert ds.skipped_files == ()
    with pytest.raises(data.UserInputError, match="workers must be at least 1, got 0"):
        data.load_image_folder(tmp_path, "train", workers=0)
    with pytest.raises(data.UserInputError, match="image_size must be a side in pixels"):
        data.load_image_folder(tmp_path, "train", image_size=0)


def test_load_image_folder_jpeg_draft_only_when_downscaling_a_lot(tmp_path):
    y, x = np.mgrid[0:190, 0:250]
    smooth = np.stack([x, y * 1.3, (x + y) / 1.8], axis=-1).astype(np.uint8)  # gradients
    _write_jpeg(tmp_path / "train" / "cat" / "big.jpg", smooth)
    path = tmp_path / "train" / "cat" / "big.jpg"
    # 250x190 -> 32: decoded at 1/4 scale (63x48, the last column partly covered), then
    # resized; close to a full decode + resize (mean 1.2, max 3 without the draft box).
    drafted = data.load_image_folder(tmp_path, "train", image_size=32).images[0]
    full = _plain_decode(path, 32).astype(np.int16)
    assert not np.array_equal(drafted, full)  # the draft path was taken
    assert np.abs(drafted - full).mean() < 0.5 and np.abs(drafted - full).max() <= 2
    # 250x190 -> 100 is under twice the target: decoded in full, exactly as without draft.
    near_size = data.load_image_folder(tmp_path, "train", image_size=100).images[0]
    np.testing.assert_array_equal(near_size, _plain_decode(path, 100))
    stored_size = data.load_image_folder(tmp_path, "train").images[0]
    np.testing.assert_array_equal(stored_size, _plain_decode(path))


def test_load_image_folder_holds_few_decoded_images_at_once(tmp_path, monkeypatch):
    """Structural memory check: full-size images exist only inside `_decode_image`, so
    its concurrent calls bound them; and its results must be dropped once written into
    the array, not collected (the old loader kept all N before stacking)."""
    for index in range(100):
        _write_png(tmp_path / "train" / "cat" / f"{index:03d}.png", _noise(20, 20, seed=index))
    decode = data._decode_image
    lock = threading.Lock()
    counts = {"running": 0, "max_running": 0, "alive": 0, "max_alive": 0, "calls": 0}

    def dropped():
        with lock:
            counts["alive"] -= 1

    def counting_decode(path, size):
        with lock:
            counts["running"] += 1
            counts["calls"] += 1
            counts["max_running"] = max(counts["max_running"], counts["running"])
        try:
            image = decode(path, size)
        finally:
            with lock:
                counts["running"] -= 1
        with lock:
            counts["alive"] += 1
            counts["max_alive"] = max(counts["max_alive"], counts["alive"])
        weakref.finalize(image, dropped)
        return image

    monkeypatch.setattr(data, "_decode_image", counting_decode)
    workers = 3
    ds = data.load_image_folder(tmp_path, "train", image_size=10, workers=workers)
    assert len(ds) == counts["calls"] == 100
    assert 1 <= counts["max_running"] <= workers
    # Each thread holds its current result and at most the previous one; the first image
    # is kept until the end for its shape.
    assert counts["max_alive"] <= 2 * workers + 1


@pytest.fixture(scope="module")
def cifar10_subset(tmp_path_factory) -> Path:
    """20 images per class of each split of the shared CIFAR-10 archive, extracted member
    by member (the archive itself is never unpacked in full)."""
    archive = _shared_data_dir() / "cifar10-images.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (set SWIN_FLAX_SHARED_DATA to its folder)")
    out = tmp_path_factory.mktemp("cifar10")
    per_class: dict[tuple[str, str], int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in ("train", "test"):
                continue
            key = (parts[0], parts[1])
            if per_class.get(key, 0) >= 20:
                continue
            per_class[key] = per_class.get(key, 0) + 1
            target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return out


def test_load_image_folder_real_cifar10(cifar10_subset):
    train = data.load_image_folder(cifar10_subset, "train")
    test = data.load_image_folder(cifar10_subset, "test")
    for ds in (train, test):
        assert ds.images.shape == (200, 32, 32, 3)
        assert ds.class_names == CIFAR10_CLASSES
        np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), [20] * 10)
        # CIFAR-10's per-channel means are about (125, 123, 114): a check that the
        # channels are RGB in order and the JPEGs decoded to natural images.
        means = ds.images.reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(means, [125.3, 123.0, 113.9], atol=15)
        assert means[0] > means[2]
    normalised = augment.preprocess_eval(train.images[:4], out_size=56)
    assert normalised.shape == (4, 56, 56, 3) and bool(jnp.isfinite(normalised).all())


def test_load_image_folder_real_cifar10_parallel_equals_plain_decode(cifar10_subset):
    ds = data.load_image_folder(cifar10_subset, "test", workers=2)
    split = cifar10_subset / "test"
    files = [path for name in CIFAR10_CLASSES for path in sorted((split / name).iterdir())]
    np.testing.assert_array_equal(ds.images, np.stack([_plain_decode(path) for path in files]))


# --------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------


def test_load_digits_shapes_classes_and_determinism():
    train, test = data.load_digits(seed=0, image_size=32, test_fraction=0.25)
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert train.images.shape[1:] == (32, 32, 3) and test.images.dtype == np.uint8
    assert train.num_classes == 10 and train.class_names == tuple("0123456789")
    assert set(train.labels) == set(test.labels) == set(range(10))
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])  # gray as RGB
    assert train.images.max() == 255 and train.images.min() == 0
    again_train, again_test = data.load_digits(seed=0)
    np.testing.assert_array_equal(again_test.images, test.images)
    np.testing.assert_array_equal(again_train.labels, train.labels)
    _, other_test = data.load_digits(seed=1)
    assert not np.array_equal(other_test.images, test.images)
    small_train, _ = data.load_digits(image_size=8)
    assert small_train.images.shape[1:] == (8, 8, 3)


# --------------------------------------------------------------------------------------
# On-device augmentation
# --------------------------------------------------------------------------------------


def _random_images(batch: int = 8, size: int = 8, seed: int = 0) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))


def test_augment_batch_shape_dtype_and_determinism():
    images = _random_images()
    key = jax.random.key(0)
    out = augment.augment_batch(images, key, out_size=28, dtype=jnp.bfloat16)
    assert out.shape == (8, 28, 28, 3) and out.dtype == jnp.bfloat16
    same = augment.augment_batch(images, key, out_size=28, dtype=jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(same, np.float32))
    other = augment.augment_batch(images, jax.random.key(1), out_size=28, dtype=jnp.bfloat16)
    assert not np.array_equal(np.asarray(out, np.float32), np.asarray(other, np.float32))
    jitted = jax.jit(augment.augment_batch, static_argnames=("out_size", "dtype"))
    np.testing.assert_allclose(
        np.asarray(jitted(images, key, out_size=28, dtype=jnp.float32)),
        np.asarray(augment.augment_batch(images, key, out_size=28)),
        atol=1e-5,
    )


def test_augment_without_crop_and_flip_equals_eval_preprocessing():
    images = _random_images()
    train_view = augment.augment_batch(
        images, jax.random.key(3), out_size=16, crop_padding=0, flip=False
    )
    eval_view = augment.preprocess_eval(images, out_size=16)
    np.testing.assert_array_equal(np.asarray(train_view), np.asarray(eval_view))


def test_normalisation_of_constant_image_matches_hand_computation():
    images = jnp.full((2, 4, 4, 3), 128, jnp.uint8)
    out = augment.preprocess_eval(images, out_size=12)
    # (128 / 255 - mean) / std with timm's ImageNet mean (0.485, 0.456, 0.406)
    # and std (0.229, 0.224, 0.225).
    expected = [0.0740645, 0.2051821, 0.4264924]
    np.testing.assert_allclose(
        np.asarray(out), np.broadcast_to(expected, (2, 12, 12, 3)), atol=1e-6
    )
    black = augment.preprocess_eval(jnp.zeros((1, 2, 2, 3), jnp.uint8), out_size=2)
    # -mean / std
    expected_black = [-2.1179039, -2.0357143, -1.8044444]
    np.testing.assert_allclose(np.asarray(black[0, 0, 0]), expected_black, atol=1e-6)


def test_random_flip_mirrors_some_images_exactly():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :3] = 255  # bright left side: not mirror-symmetric
    images = jnp.asarray(np.broadcast_to(image, (32, 8, 8, 3)))
    out = np.asarray(augment.augment_batch(images, jax.random.key(0), out_size=8, crop_padding=0))
    plain = np.asarray(augment.preprocess_eval(images[:1], out_size=8))[0]
    mirrored = plain[:, ::-1]
    is_plain = [np.array_equal(o, plain) for o in out]
    is_mirrored = [np.array_equal(o, mirrored) for o in out]
    assert all(p != m for p, m in zip(is_plain, is_mirrored))  # each is exactly one of them
    assert 0 < sum(is_mirrored) < 32


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` moved by (dy, dx) with zeros shifted in: what a padded crop produces."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((8, 8), (8, 8), (0, 0)))
    return padded[8 - dy : 8 - dy + height, 8 - dx : 8 - dx + width]


def test_random_crop_is_a_zero_filled_shift_within_padding():
    padding = 2
    image = (np.arange(8 * 8 * 3).reshape(8, 8, 3) + 1).astype(np.uint8)  # no zero pixels
    images = jnp.asarray(np.broadcast_to(image, (16, 8, 8, 3)))
    cropped = np.asarray(augment.random_crop(images, jax.random.key(5), padding))
    shifts = set()
    for out in cropped:
        matches = [
            (dy, dx)
            for dy in range(-padding, padding + 1)
            for dx in range(-padding, padding + 1)
            if np.array_equal(out, _shift(image, dy, dx))
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 3  # offsets drawn per image, not one for the batch


def test_augment_batch_sharded_over_devices_matches_single_device():
    """Run in a subprocess: the 4 fake CPU devices must be configured before jax starts."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from swin_flax.augment import augment_batch
        assert jax.device_count() == 4
        images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
        step = jax.jit(lambda x, k: augment_batch(x, k, out_size=16))
        key = jax.random.key(7)
        out = step(sharded, key)
        reference = step(jax.device_put(images, jax.devices()[0]), key)
        np.testing.assert_allclose(np.asarray(out), np.asarray(reference), atol=1e-6)
        print("sharded-ok", out.sharding.spec)
        """
    )
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded-ok" in result.stdout


# --------------------------------------------------------------------------------------
# Index batches
# --------------------------------------------------------------------------------------


def test_epoch_batches_are_seeded_permutations():
    batches = data.epoch_batches(103, 10, seed=1, epoch=0)
    assert batches.shape == (10, 10) and batches.dtype == np.int32
    flat = batches.ravel()
    assert len(set(flat)) == 100 and flat.min() >= 0 and flat.max() < 103
    np.testing.assert_array_equal(batches, data.epoch_batches(103, 10, seed=1, epoch=0))
    assert not np.array_equal(batches, data.epoch_batches(103, 10, seed=1, epoch=1))
    assert not np.array_equal(batches, data.epoch_batches(103, 10, seed=2, epoch=0))
    padded = data.epoch_batches(103, 10, seed=1, epoch=0, drop_remainder=False)
    assert padded.shape == (11, 10) and set(padded.ravel()) == set(range(103))
    assert data.steps_per_epoch(103, 10) == 10 and data.steps_per_epoch(103, 10, False) == 11
    with pytest.raises(ValueError, match="no full batch"):
        data.epoch_batches(5, 10, seed=0, epoch=0)


def test_eval_batches_cover_every_example_once():
    indices, mask = data.eval_batches(23, 5)
    assert indices.shape == mask.shape == (5, 5) and mask.dtype == bool
    np.testing.assert_array_equal(np.sort(indices[mask]), np.arange(23))
    assert mask.sum() == 23 and not mask[-1, 3:].any()
    assert indices.min() >= 0 and indices.max() < 23  # padding is a valid gather index
    exact_indices, exact_mask = data.eval_batches(20, 5)
    assert exact_indices.shape == (4, 5) and exact_mask.all()
