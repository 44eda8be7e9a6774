"""Tests for the data sets (`swin_flax.data`) and on-device augmentation (`swin_flax.augment`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
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
    with pytest.raises(ValueError, match="different sizes.*image_size"):
        data.load_image_folder(tmp_path, "val", class_names=["cat"])
    resized = data.load_image_folder(tmp_path, "val", 5, class_names=["cat"])
    assert resized.images.shape == (2, 5, 5, 3)


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
