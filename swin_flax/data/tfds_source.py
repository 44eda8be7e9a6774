"""TensorFlow Datasets -> `ArrayDataset`, and the network probe that makes an offline
machine fail in seconds instead of waiting minutes for the downloader's retries.

`load_tfds` reads any TFDS image-classification data set through `tfds.data_source`
(array_record; TensorFlow is needed only to *prepare* a data set, not to read it), and
raises `DatasetUnavailableError` with instructions when it is not prepared and cannot be
downloaded. `tensorflow_datasets` is imported inside the functions that need it, so this
module imports on a machine without it.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np

from swin_flax._optional import require
from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.images import _resize_rgb, _to_rgb, stack_images
from swin_flax.data.sources import decode_source, fingerprint, pillow_version, shape_error
from swin_flax.errors import DatasetUnavailableError, UserInputError

logger = logging.getLogger(__name__)

# Hosts probed to tell "offline" from "online" before a download. storage.googleapis.com
# is TFDS's own mirror; a second, unrelated host avoids a false "offline" when one is down.
_PROBE_HOSTS = (("storage.googleapis.com", 443), ("www.google.com", 443))
_PROBE_TIMEOUT_S = 3.0


def _probe_address() -> list[tuple[str, int]]:
    """Where to test connectivity: the HTTPS proxy if one is configured, else `_PROBE_HOSTS`.

    Behind a proxy direct connections fail while downloads work, so probing the hosts
    directly would wrongly report "offline".
    """
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.hostname:
            return [(parts.hostname, parts.port or 80)]
    return list(_PROBE_HOSTS)


def network_available(timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether the internet is reachable, answered within `timeout` seconds.

    A download attempted offline can spend minutes in DNS and HTTP retries. Each host is
    probed in a daemon thread because DNS resolution ignores socket timeouts; the caller
    waits at most `timeout` seconds in all.
    """
    reachable = threading.Event()

    def probe(host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                reachable.set()
        except OSError:
            pass

    threads = [
        threading.Thread(target=probe, args=address, daemon=True) for address in _probe_address()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    while not reachable.is_set() and time.monotonic() < deadline:
        if not any(thread.is_alive() for thread in threads):
            break
        reachable.wait(0.05)
    return reachable.is_set()


def _unavailable_message(name: str, data_dir: Any, reason: str) -> str:
    return (
        f"TFDS data set '{name}' is not prepared in data_dir={data_dir} and cannot be "
        f"obtained here: {reason}. Either prepare it on a machine with internet access "
        f"(TensorFlow is needed to prepare it): `pip install tensorflow-cpu "
        f"tensorflow-datasets && tfds build {name} --data_dir=DIR "
        f"--file_format=array_record`, then copy DIR/{name} into {data_dir}; or pass "
        f"data_dir= pointing at a directory that already holds '{name}'."
    )


def _tfds_builder(tfds, name: str, data_dir: str | None):
    """`tfds.builder`, with a short error for an unknown name instead of TFDS's full
    catalogue dump."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(name.split("/")[0].split(":")[0], known, n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UserInputError(
            f"Unknown TFDS data set '{name}'.{hint} List all names with "
            "`python -c 'import tensorflow_datasets as tfds; print(tfds.list_builders())'` "
            "or see https://www.tensorflow.org/datasets/catalog/overview"
        ) from None


def _check_features(builder, image_key: str, label_key: str) -> None:
    """Fail before any download if the data set is not image classification."""
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise UserInputError(
                f"TFDS data set '{builder.name}' has no feature '{key}'; its features "
                f"are {sorted(features.keys())} (set image_key / label_key)"
            )
    if not hasattr(features[label_key], "num_classes"):
        raise UserInputError(
            f"feature '{label_key}' of '{builder.name}' is {type(features[label_key]).__name__}, "
            "not a ClassLabel; load_tfds reads classification data sets only"
        )


def _prepare(tfds, builder, name: str, download: bool) -> None:
    """Download and prepare the data set as array_record, or raise DatasetUnavailableError.

    The connectivity probe runs first so that an offline machine fails in seconds
    instead of waiting for the downloader's retries.
    """
    data_dir = builder.data_dir_root
    if not download:
        raise DatasetUnavailableError(
            _unavailable_message(name, data_dir, "download=False was passed")
        )
    if not network_available():
        raise DatasetUnavailableError(
            _unavailable_message(name, data_dir, "there is no network connection")
        )
    try:
        # array_record so that `as_data_source` can read it without TensorFlow.
        builder.download_and_prepare(file_format="array_record")
    except ImportError as err:  # most image data sets need TensorFlow to encode examples
        reason = f"preparing it needs a missing package ({str(err).strip().splitlines()[-1]})"
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, reason)) from err
    except (tfds.download.DownloadError, OSError) as err:
        reason = f"the download failed ({type(err).__name__}: {err})"
        raise DatasetUnavailableError(_unavailable_message(name, data_dir, reason)) from err


def _examples_with_tensorflow(tfds, builder, split: str) -> Iterator[dict]:
    """Fallback reader for data sets prepared as tfrecord (`tfds build`'s default)."""
    require(
        "tensorflow",
        f"reading TFDS data set '{builder.name}' in {builder.data_dir} (stored as "
        f"{builder.info.file_format}, which only TensorFlow can read)",
        "prepare",
        error=DatasetUnavailableError,
        alternative=f"prepare it again with `tfds build {builder.name} --data_dir=DIR "
        "--file_format=array_record`",
    )
    return iter(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def open_tfds(
    name: str,
    data_dir: str | None = None,
    *,
    download: bool = True,
    image_key: str = "image",
    label_key: str = "label",
):
    """The builder of a TFDS image-classification data set, checked and prepared in
    `data_dir` (TFDS's default when None) if needed: DatasetUnavailableError within seconds
    when it is not there and cannot be downloaded, UserInputError for an unknown name or
    missing features."""
    # A dependency of swin_flax itself: ImportError (a broken install) rather than a
    # user's mistake.
    tfds = require("tensorflow_datasets", "load_tfds", error=ImportError)
    builder = _tfds_builder(tfds, name, data_dir)
    _check_features(builder, image_key, label_key)
    if not builder.is_prepared():
        _prepare(tfds, builder, name, download)
    return builder


class TfdsSource:
    """A TFDS split through `tfds.data_source`: random access to array_record files, with
    no TensorFlow at read time. Labels are read per example (a label pass over a big split
    would read every record); `labels` reads them all, without decoding the images, only
    when asked (a class-balanced subset)."""

    kind = "tfds"

    def __init__(self, builder, split: str, size: int | None, *, image_key: str, label_key: str):
        self.builder, self.split, self.size = builder, split, size
        self.image_key, self.label_key = image_key, label_key
        try:
            self._source = builder.as_data_source(split=split)
        except NotImplementedError:  # stored as tfrecord: only TensorFlow reads it
            raise DatasetUnavailableError(
                f"TFDS data set '{builder.name}' in {builder.data_dir} is stored as "
                f"{builder.info.file_format}, which cannot be read by index: prepare it again "
                f"with `tfds build {builder.name} --data_dir=DIR --file_format=array_record`"
            ) from None
        label_feature = builder.info.features[label_key]
        self.num_classes = int(label_feature.num_classes)
        self.class_names = tuple(label_feature.names) if label_feature.names else None
        self.skipped_files: tuple[str, ...] = ()
        self._labels: np.ndarray | None = None
        self._shape: tuple | None = (size, size, 3) if size else None

    def __len__(self) -> int:
        return len(self._source)

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            tfds = require("tensorflow_datasets", "reading TFDS labels", error=ImportError)
            undecoded = self.builder.as_data_source(
                split=self.split, decoders={self.image_key: tfds.decode.SkipDecoding()}
            )
            values = [undecoded[i][self.label_key] for i in range(len(undecoded))]
            self._labels = np.asarray(values, np.int32)
        return self._labels

    def image_shape(self) -> tuple[int, int, int]:
        if self._shape is None:
            self._shape = self._pixels(0).shape
        return self._shape

    def pixels_per_image(self) -> int:
        """H x W, from the features' metadata when the images have one size."""
        if self.size:
            return self.size * self.size
        shape = self.builder.info.features[self.image_key].shape
        if shape[0] and shape[1]:
            return int(shape[0]) * int(shape[1])
        height, width, _ = self.image_shape()
        return height * width

    def _pixels(self, index: int) -> np.ndarray:
        image = _to_rgb(self._source[index][self.image_key])
        return _resize_rgb(image, self.size) if self.size else image

    def read(self, index: int) -> tuple[np.ndarray, int]:
        example = self._source[index]
        image = _to_rgb(example[self.image_key])
        if self.size:
            image = _resize_rgb(image, self.size)
        elif image.shape != self.image_shape():
            name = f"{self.builder.name}[{self.split}] example {index}"
            raise shape_error(name, image.shape, self.image_shape())
        return image, int(example[self.label_key])

    def identity(self) -> dict:
        import tensorflow_datasets as tfds

        return {
            "source": self.kind,
            "name": self.builder.info.full_name,
            "split": self.split,
            "count": len(self),
            "stored_size": self.size or 0,
            "decoder": f"tensorflow_datasets {tfds.__version__}, Pillow {pillow_version()}",
        }


def split_sizes(
    name: str, splits, data_dir: str | None = None, *, label_key: str = "label"
) -> tuple[tuple[int | None, ...], int]:
    """Examples in each of `splits` (None while the data set is not prepared) and the class
    count, from the builder's metadata: no example is read, nothing is downloaded."""
    tfds = require("tensorflow_datasets", "split_sizes", error=ImportError)
    builder = _tfds_builder(tfds, name, data_dir)
    _check_features(builder, "image", label_key)
    classes = builder.info.features[label_key].num_classes
    if not builder.is_prepared():
        return tuple(None for _ in splits), classes
    return tuple(builder.info.splits[split].num_examples for split in splits), classes


def load_tfds(
    name: str,
    split: str,
    data_dir: str | None = None,
    *,
    download: bool = True,
    image_key: str = "image",
    label_key: str = "label",
    image_size: int | None = None,
) -> ArrayDataset:
    """A whole TFDS split (e.g. 'train', 'test', 'train[:90%]') as an `ArrayDataset`.

    Prepares the data set as `open_tfds` does. Grayscale images become 3-channel;
    `image_size` resizes every image (needed when sizes vary). Array_record files are read
    by index straight into one preallocated array (`TfdsSource`); tfrecord files, which
    only TensorFlow reads, example by example.
    """
    tfds = require("tensorflow_datasets", "load_tfds", error=ImportError)
    builder = open_tfds(name, data_dir, download=download, image_key=image_key, label_key=label_key)
    keys = {"image_key": image_key, "label_key": label_key}
    try:
        source = TfdsSource(builder, split, image_size, **keys)
    except DatasetUnavailableError:
        return _load_with_tensorflow(tfds, builder, split, image_size, **keys)
    indices = np.arange(len(source))
    images, labels = decode_source(source, indices, workers=min(8, os.cpu_count() or 1))
    dataset = ArrayDataset(
        images=images,
        labels=labels,
        num_classes=source.num_classes,
        class_names=source.class_names,
        fingerprint=fingerprint(source, indices),
    )
    logger.info("Read %d examples of %s[%s] from %s", len(dataset), name, split, builder.data_dir)
    return dataset


def _load_with_tensorflow(tfds, builder, split, image_size, *, image_key, label_key):
    images, labels = [], []
    for example in _examples_with_tensorflow(tfds, builder, split):
        images.append(example[image_key])
        labels.append(example[label_key])
    label_feature = builder.info.features[label_key]
    return ArrayDataset(
        images=stack_images(images, image_size, f"{builder.name}[{split}]"),
        labels=np.asarray(labels, dtype=np.int32),
        num_classes=int(label_feature.num_classes),
        class_names=tuple(label_feature.names) if label_feature.names else None,
    )
