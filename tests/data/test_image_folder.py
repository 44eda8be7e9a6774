"""Tests for image-folder loading (`swin_flax.data.image_folder`): labels, parallel
decoding into one array, bad files, decompression bombs, memory held at once."""

from __future__ import annotations

import os
import struct
import tarfile
import threading
import warnings
import weakref
import zlib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import demo
from swin_flax.data import augment, image_folder
from swin_flax.data.image_folder import load_image_folder
from swin_flax.errors import BadImagesError, UserInputError
from swin_flax.pipeline.run import run_pipeline
from tests.helpers import run_train_py

REPO_ROOT = Path(__file__).resolve().parents[2]
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _shared_data_dir() -> Path:
    override = os.environ.get("SWIN_FLAX_SHARED_DATA")
    return Path(override) if override else REPO_ROOT / ".." / "shared" / "data"


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
    train = load_image_folder(tmp_path, "train")
    assert train.class_names == ("cat", "dog")  # sorted, not creation order
    np.testing.assert_array_equal(train.labels, [0, 1, 1])
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], [30, 10, 20])  # files sorted
    test = load_image_folder(tmp_path, "test")  # has no "cat": labels follow train
    assert test.class_names == ("cat", "dog") and test.num_classes == 2
    np.testing.assert_array_equal(test.labels, [1])
    np.testing.assert_array_equal(test.images, np.full((1, 6, 6, 3), 40, np.uint8))
    resized = load_image_folder(tmp_path, "train", image_size=4)
    assert resized.images.shape == (3, 4, 4, 3)
    np.testing.assert_array_equal(resized.images[:, 0, 0, 0], [30, 10, 20])  # solid stays solid


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", "train")
    _write_png(tmp_path / "train" / "cat" / "a.png", _solid(1))
    with pytest.raises(FileNotFoundError, match="test"):
        load_image_folder(tmp_path, "test")
    _write_png(tmp_path / "test" / "bird" / "a.png", _solid(1))
    with pytest.raises(ValueError, match=r"\['bird'\].*not among"):
        load_image_folder(tmp_path, "test")
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match="dog holds no images"):
        load_image_folder(tmp_path, "train")
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "dog").rmdir()
    (tmp_path / "train" / "cat" / "a.png").unlink()
    (tmp_path / "train" / "cat").rmdir()
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path, "val")
    _write_png(tmp_path / "val" / "cat" / "a.png", _solid(1, size=6))
    _write_png(tmp_path / "val" / "cat" / "b.png", _solid(1, size=7))
    with pytest.raises(ValueError, match="different sizes.*data.stored_size=N.*image_size"):
        load_image_folder(tmp_path, "val", class_names=["cat"])
    resized = load_image_folder(tmp_path, "val", 5, class_names=["cat"])
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
        with pytest.raises(BadImagesError) as info:
            load_image_folder(root, "train", image_size=8)
    assert isinstance(info.value, UserInputError)
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
        ds = load_image_folder(root, "train", image_size=8, skip_bad=True, workers=2)
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
    with pytest.raises(BadImagesError, match="none of the 23 image files") as info:
        load_image_folder(tmp_path, "train", skip_bad=True)  # nothing left to skip to
    assert len(info.value.bad_files) == 23
    _write_png(tmp_path / "train" / "cat" / "99.png", _solid(5))
    with pytest.raises(BadImagesError) as info:
        load_image_folder(tmp_path, "train")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("23 of 24 image files")
    assert lines[20].endswith("19.jpg: empty file") and lines[21] == "  ... and 3 more"
    with pytest.warns(UserWarning, match="skipped 23 of 24"):
        ds = load_image_folder(tmp_path, "train", skip_bad=True)
    np.testing.assert_array_equal(ds.images, _solid(5)[None])
    assert len(ds.skipped_files) == 23 and ds.skipped_files[0].endswith("00.jpg")


def test_load_image_folder_pixel_limit_follows_pil(tmp_path, monkeypatch):
    _write_png(tmp_path / "train" / "cat" / "a.png", _noise(40, 30, seed=0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImagesError, match=r"30x40 = 1,200 pixels, over the limit of 1,000"):
        load_image_folder(tmp_path, "train")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's way to allow any size
    assert load_image_folder(tmp_path, "train").images.shape[1:] == (40, 30, 3)


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
    with pytest.raises(UserInputError) as info:
        load_image_folder(tmp_path, "train", workers=2)
    cat = tmp_path / "train" / "cat"
    assert str(info.value) == (
        f"images in {tmp_path / 'train'} have different sizes: {cat / '60.png'} is 7x5 but "
        f"{cat / '00.png'} is 4x4 (width x height); set data.stored_size=N (config) / "
        "image_size=N (load_image_folder, load_tfds) to resize them all to N x N"
    )
    assert load_image_folder(tmp_path, "train", 6).images.shape[1:] == (6, 6, 3)


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
        ds = load_image_folder(tmp_path, "train", image_size=9, workers=workers)
        np.testing.assert_array_equal(ds.images, np.stack(expected))
        np.testing.assert_array_equal(ds.labels, expected_labels)
        assert ds.skipped_files == ()
    with pytest.raises(UserInputError, match="workers must be at least 1, got 0"):
        load_image_folder(tmp_path, "train", workers=0)
    with pytest.raises(UserInputError, match="image_size must be a side in pixels"):
        load_image_folder(tmp_path, "train", image_size=0)


def test_load_image_folder_jpeg_draft_only_when_downscaling_a_lot(tmp_path):
    y, x = np.mgrid[0:190, 0:250]
    smooth = np.stack([x, y * 1.3, (x + y) / 1.8], axis=-1).astype(np.uint8)  # gradients
    _write_jpeg(tmp_path / "train" / "cat" / "big.jpg", smooth)
    path = tmp_path / "train" / "cat" / "big.jpg"
    # 250x190 -> 32: decoded at 1/4 scale (63x48, the last column partly covered), then
    # resized; close to a full decode + resize (mean 1.2, max 3 without the draft box).
    drafted = load_image_folder(tmp_path, "train", image_size=32).images[0]
    full = _plain_decode(path, 32).astype(np.int16)
    assert not np.array_equal(drafted, full)  # the draft path was taken
    assert np.abs(drafted - full).mean() < 0.5 and np.abs(drafted - full).max() <= 2
    # 250x190 -> 100 is under twice the target: decoded in full, exactly as without draft.
    near_size = load_image_folder(tmp_path, "train", image_size=100).images[0]
    np.testing.assert_array_equal(near_size, _plain_decode(path, 100))
    stored_size = load_image_folder(tmp_path, "train").images[0]
    np.testing.assert_array_equal(stored_size, _plain_decode(path))


def test_load_image_folder_holds_few_decoded_images_at_once(tmp_path, monkeypatch):
    """Structural memory check: full-size images exist only inside `decode_image`, so
    its concurrent calls bound them; and its results must be dropped once written into
    the array, not collected (the old loader kept all N before stacking)."""
    for index in range(100):
        _write_png(tmp_path / "train" / "cat" / f"{index:03d}.png", _noise(20, 20, seed=index))
    decode = image_folder.decode_image
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

    monkeypatch.setattr(image_folder, "decode_image", counting_decode)
    workers = 3
    ds = load_image_folder(tmp_path, "train", image_size=10, workers=workers)
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
    train = load_image_folder(cifar10_subset, "train")
    test = load_image_folder(cifar10_subset, "test")
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
    ds = load_image_folder(cifar10_subset, "test", workers=2)
    split = cifar10_subset / "test"
    files = [path for name in CIFAR10_CLASSES for path in sorted((split / name).iterdir())]
    np.testing.assert_array_equal(ds.images, np.stack([_plain_decode(path) for path in files]))


def image_folder_with_bad_files(root: Path) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(8 if split == "train" else 4):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                pixels[..., 0] = 200 * label
                Image.fromarray(pixels).save(folder / f"{i}.png")
    truncated = root / "train" / "cat" / "cut.jpg"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty = root / "test" / "dog" / "empty.jpg"
    empty.write_bytes(b"")
    return [truncated, empty]


def image_folder_args(root: Path) -> list[str]:
    return [
        "--config",
        "configs/demo.py:smoke",
        "--config.runs=",
        "--config.data.source=image_folder",
        f"--config.data.root={root}",
        "--config.finetune.batch_size=4",
        "--config.distill.batch_size=4",
        "--config.eval.batch_size=8",
    ]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bad_images_stop_the_run_with_one_list_and_can_be_skipped(tmp_path):
    bad = image_folder_with_bad_files(tmp_path / "images")
    failed = run_train_py(*image_folder_args(tmp_path / "images"), "--workdir", str(tmp_path / "a"))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert str(bad[0]) in failed.stderr and str(bad[1]) in failed.stderr  # both splits at once
    assert "data.skip_bad_images=True" in failed.stderr
    assert not (tmp_path / "a" / "teacher").exists()

    config = demo.get_config("smoke")
    config.runs = ""
    config.data.source, config.data.root = "image_folder", str(tmp_path / "images")
    config.data.skip_bad_images = True
    config.finetune.batch_size = config.distill.batch_size = 4
    config.eval.batch_size, config.eval.throughput_batch_size = 8, 0
    with pytest.warns(UserWarning, match="cut.jpg"):
        rows = run_pipeline(config, tmp_path / "b")
    assert rows[0]["skipped_images"] == 2
    listed = (tmp_path / "b" / "skipped_images.txt").read_text().split()
    assert sorted(listed) == sorted(str(p) for p in bad)


def test_broken_and_looping_links_are_unreadable_images_not_files_without_a_suffix(
    tmp_path, capsys
):
    """A dangling or self-looping `.jpg` link was noted as a "file without an image suffix"
    and left out silently; it is an unreadable image: listed in the error, or skipped and
    counted with skip_bad."""
    _write_png(tmp_path / "train" / "cat" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "train" / "dog" / "b.png", np.ones((4, 4, 3), np.uint8))
    (tmp_path / "train" / "cat" / "gone.jpg").symlink_to("missing.jpg")
    (tmp_path / "train" / "dog" / "loop.jpg").symlink_to("loop.jpg")
    with pytest.raises(BadImagesError) as info:
        load_image_folder(tmp_path, "train")
    message = str(info.value)
    assert message.startswith(f"2 of 4 image files in {tmp_path / 'train'} cannot be read:")
    assert "cat/gone.jpg: a broken symbolic link to missing.jpg (no such file)" in message
    assert "dog/loop.jpg: a symbolic link to loop.jpg that loops" in message
    assert "not read" not in capsys.readouterr().err  # no "without an image suffix" note
    with pytest.warns(UserWarning, match="skipped 2 of 4 image files"):
        data = load_image_folder(tmp_path, "train", skip_bad=True)
    assert len(data) == 2 and sorted(Path(p).name for p in data.skipped_files) == [
        "gone.jpg",
        "loop.jpg",
    ]
