"""Tests for TensorFlow Datasets loading and the network probe (`swin_flax.data.tfds_source`)."""

from __future__ import annotations

import dataclasses
import socket
import time

import numpy as np
import pytest
from PIL import Image

from swin_flax.data import tfds_source
from swin_flax.errors import DatasetUnavailableError
from swin_flax.pipeline.run import run_pipeline
from tests.helpers import smoke_config


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """The connectivity probe honours proxy variables; keep the host's out of the tests."""
    for scheme in ("https", "http", "all"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_load_tfds_cifar100_under_mock_data(tfds, monkeypatch):
    # mock_data points the builder at metadata without prepared files and turns
    # download_and_prepare into a no-op, so load_tfds takes its download path: report
    # the network as up to let it get there.
    monkeypatch.setattr(tfds_source, "network_available", lambda timeout=None: True)
    with tfds.testing.mock_data(num_examples=12):
        ds = tfds_source.load_tfds("cifar100", "train", data_dir="/nonexistent/tfds")
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
    ds = tfds_source.load_tfds(tiny_gray_builder, "train", data_dir=str(tmp_path), download=False)
    assert ds.images.shape == (12, 8, 8, 3)
    assert ds.class_names == ("zero", "one", "two") and ds.num_classes == 3
    ids = ds.images[:, 0, 0, 0].astype(np.int32) // 10
    assert sorted(ids) == list(range(12))
    np.testing.assert_array_equal(ds.labels, ids % 3)
    expected = np.broadcast_to(10 * ids[:, None, None, None], ds.images.shape)
    np.testing.assert_array_equal(ds.images, expected)
    head = tfds_source.load_tfds(
        tiny_gray_builder, "test[:50%]", data_dir=str(tmp_path), download=False
    )
    assert len(head) == 3
    assert set(head.images[:, 0, 0, 0] // 10) <= set(range(12, 18))


def test_load_tfds_offline_fails_fast_with_instructions(tfds, tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "network_available", lambda timeout=None: False)

    def no_download(*args, **kwargs):
        raise AssertionError("load_tfds must not attempt a download when offline")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as info:
        tfds_source.load_tfds("cifar100", "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert "cifar100" in message and str(tmp_path) in message
    assert "tfds build cifar100" in message and "no network" in message
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        tfds_source.load_tfds("cifar100", "test", data_dir=str(tmp_path), download=False)


def test_load_tfds_unknown_name_suggests_close_names(tfds):
    expected = "Unknown TFDS data set 'cifar1000'.*cifar100.*list_builders"
    with pytest.raises(ValueError, match=expected):
        tfds_source.load_tfds("cifar1000", "train")


def test_load_tfds_missing_feature_is_reported_before_download(tfds, tmp_path):
    with pytest.raises(ValueError, match="no feature 'pixels'.*coarse_label"):
        tfds_source.load_tfds("cifar100", "train", data_dir=str(tmp_path), image_key="pixels")


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
        monkeypatch.setattr(tfds_source, "_PROBE_HOSTS", (("127.0.0.1", closed_port),))
        assert tfds_source.network_available(timeout=2.0) is False
        hosts = (("127.0.0.1", closed_port), server.getsockname())
        monkeypatch.setattr(tfds_source, "_PROBE_HOSTS", hosts)
        assert tfds_source.network_available(timeout=2.0) is True
        # Behind a proxy only the proxy is probed.
        monkeypatch.setattr(tfds_source, "_PROBE_HOSTS", (("127.0.0.1", closed_port),))
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert tfds_source.network_available(timeout=2.0) is True
    finally:
        server.close()


def test_offline_dataset_error_is_immediate(tmp_path, monkeypatch):
    from swin_flax.data import tfds_source

    monkeypatch.setattr(tfds_source, "network_available", lambda *a, **k: False)
    config = smoke_config()
    config.data.data_dir = str(tmp_path / "tfds")
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match="cifar100.*data_dir"):
        run_pipeline(config, tmp_path / "work")
    assert time.monotonic() - start < 30


def test_a_tfds_split_streams_the_pixels_and_labels_load_tfds_decodes(
    tfds, tiny_gray_builder, tmp_path
):
    builder = tfds.builder(tiny_gray_builder, data_dir=tmp_path)
    builder.download_and_prepare(file_format="array_record")
    resident = tfds_source.load_tfds(
        tiny_gray_builder, "train", data_dir=str(tmp_path), download=False, image_size=4
    )
    opened = tfds_source.open_tfds(tiny_gray_builder, str(tmp_path), download=False)
    source = tfds_source.TfdsSource(opened, "train", 4, image_key="image", label_key="label")
    assert len(source) == 12 and source.num_classes == 3 and source._labels is None
    streamed = [source.read(i) for i in range(len(source))]
    np.testing.assert_array_equal(np.stack([im for im, _ in streamed]), resident.images)
    assert [label for _, label in streamed] == resident.labels.tolist() == source.labels.tolist()
    identity = source.identity()
    assert identity["count"] == 12 and identity["split"] == "train" and identity["stored_size"] == 4
    assert resident.fingerprint == tfds_source.fingerprint(source, np.arange(12))


def test_mock_cifar100_streams_as_it_is_decoded(tfds, monkeypatch):
    from swin_flax.data import StreamedDataset, open_splits
    from swin_flax.settings import DataSettings

    monkeypatch.setattr(tfds_source, "network_available", lambda timeout=None: True)
    config = DataSettings(data_dir="/nonexistent/tfds", test_subset=4, stored_size=16)
    with tfds.testing.mock_data(num_examples=10):
        streamed = open_splits(dataclasses.replace(config, placement="stream"), seed=0)
        resident = open_splits(dataclasses.replace(config, placement="device"), seed=0)
        assert isinstance(streamed.test, StreamedDataset) and len(streamed.test) == 4
        for split in ("train", "test"):
            decoded = getattr(streamed, split).resident()
            np.testing.assert_array_equal(decoded.images, getattr(resident, split).images)
            np.testing.assert_array_equal(decoded.labels, getattr(resident, split).labels)
            assert decoded.fingerprint == getattr(resident, split).fingerprint
