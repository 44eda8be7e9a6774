"""Data sets held as whole uint8 arrays, and the index batches that feed the train step.

The data sets this project trains on (CIFAR-100 and friends) are small enough to keep in
accelerator memory, so a data set here is just two numpy arrays: (N, H, W, 3) uint8
images and (N,) int32 labels (`ArrayDataset`). The trainer puts them on the device once;
each step then receives only a batch of *indices* (`epoch_batches`), gathers the images
inside the jitted step and augments them there (`swin_flax.augment`).

Sources:
  * `load_tfds`: any TensorFlow Datasets image-classification data set, read through
    `tfds.data_source` (array_record; TensorFlow is needed only to *prepare* a data set,
    not to read it). Fails fast with `DatasetUnavailableError` when offline.
  * `load_image_folder`: a `root/<split>/<class>/*.jpg` tree, decoded in parallel
    threads straight into one preallocated array; unreadable files are reported together
    (`BadImagesError`) or skipped.
  * `load_digits`: scikit-learn's 8x8 digits, shipped with scikit-learn: a real data set
    that works with no network at all, for demos and smoke tests.

`tensorflow_datasets` and scikit-learn are imported inside the functions that need
them, so `import swin_flax.data` works on a machine that has neither.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import logging
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

# Re-exported so that the whole input pipeline can be imported from one module.
from swin_flax.augment import (  # noqa: F401
    IMAGENET_MEAN,
    IMAGENET_STD,
    augment_batch,
    preprocess_eval,
)
from swin_flax.errors import BadImagesError, DatasetUnavailableError, UserInputError

__all__ = [
    "ArrayDataset",
    "BadImagesError",
    "DatasetUnavailableError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "augment_batch",
    "epoch_batches",
    "eval_batches",
    "load_digits",
    "load_image_folder",
    "load_tfds",
    "network_available",
    "preprocess_eval",
    "split_train_validation",
    "steps_per_epoch",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Hosts probed to tell "offline" from "online" before a download. storage.googleapis.com
# is TFDS's own mirror; a second, unrelated host avoids a false "offline" when one is down.
_PROBE_HOSTS = (("storage.googleapis.com", 443), ("www.google.com", 443))
_PROBE_TIMEOUT_S = 3.0

# How to get one image size, said for both ways in: the config key and the function
# argument (load_image_folder, load_tfds, load_digits all call it image_size).
_RESIZE_ADVICE = (
    "set data.stored_size=N (config) / image_size=N (load_image_folder, load_tfds) "
    "to resize them all to N x N"
)


# --------------------------------------------------------------------------------------
# The data set container
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole image-classification split in memory: uint8 NHWC images, int32 labels.

    Validated on construction so that a wrong dtype or shape is reported where the data
    set is made, not as an obscure error inside the jitted step.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] | None = None
    # Files of the source that could not be read and were left out (load_image_folder
    # with skip_bad=True), so that a run can record what it did not train on.
    skipped_files: tuple[str, ...] = ()

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise UserInputError(
                f"images must be a numpy uint8 array, got {type(images).__name__} "
                f"of dtype {getattr(images, 'dtype', None)}"
            )
        if images.ndim != 4 or images.shape[-1] != 3:
            raise UserInputError(f"images must have shape (N, H, W, 3), got {images.shape}")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int32:
            raise UserInputError(
                f"labels must be a numpy int32 array, got {type(labels).__name__} "
                f"of dtype {getattr(labels, 'dtype', None)}"
            )
        if labels.shape != (images.shape[0],):
            raise UserInputError(
                f"labels must have shape ({images.shape[0]},) to match the images, "
                f"got {labels.shape}"
            )
        if self.num_classes < 1:
            raise UserInputError(f"num_classes must be positive, got {self.num_classes}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise UserInputError(
                f"labels must lie in [0, {self.num_classes}), "
                f"got values from {labels.min()} to {labels.max()}"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise UserInputError(
                f"class_names has {len(self.class_names)} entries "
                f"but num_classes is {self.num_classes}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3): what the model's input size is compared against."""
        return tuple(self.images.shape[1:])

    def take(self, indices: np.ndarray) -> ArrayDataset:
        """The examples at `indices`, with the same classes (for splits and subsets)."""
        return dataclasses.replace(
            self, images=self.images[indices], labels=self.labels[indices]
        )


def split_train_validation(
    ds: ArrayDataset, validation_fraction: float, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """Carve a validation set out of a training set: `(train, validation)`.

    Most small data sets ship only train and test; tuning on test would leak, so a
    fixed, seeded random subset of train is held out instead. The same seed always gives
    the same split, and both parts keep the original example order.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise UserInputError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    num_validation = int(round(len(ds) * validation_fraction))
    if not 0 < num_validation < len(ds):
        raise UserInputError(
            f"validation_fraction={validation_fraction} of {len(ds)} examples leaves "
            f"{num_validation} for validation; both parts must be non-empty"
        )
    permutation = np.random.default_rng(seed).permutation(len(ds))
    validation = np.sort(permutation[:num_validation])
    train = np.sort(permutation[num_validation:])
    return ds.take(train), ds.take(validation)


# --------------------------------------------------------------------------------------
# Image helpers shared by the loaders
# --------------------------------------------------------------------------------------


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3): grayscale data sets
    (MNIST-like) must fit the 3-channel patch embedding of ImageNet-pretrained models."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise UserInputError(f"expected a grayscale or RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise UserInputError(f"expected uint8 pixels, got {image.dtype}")
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear PIL resize of an (H, W, 3) uint8 image to (size, size, 3)."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized)


def _stack_images(images: Iterable[np.ndarray], image_size: int | None, source: str) -> np.ndarray:
    """Stack images into one (N, H, W, 3) array, resizing them if `image_size` is set.

    Without `image_size` all images must already share one size: silently picking a
    target size would hide a data problem, so differing sizes are an error.
    """
    rgb = [_to_rgb(image) for image in images]
    if image_size is not None:
        rgb = [_resize_rgb(image, image_size) for image in rgb]
    if not rgb:
        raise UserInputError(f"{source} holds no images")
    shapes = sorted({image.shape for image in rgb})
    if len(shapes) > 1:
        raise UserInputError(
            f"images in {source} have different sizes ({shapes[0]}, {shapes[1]}, ...); "
            f"{_RESIZE_ADVICE}"
        )
    return np.stack(rgb)


# --------------------------------------------------------------------------------------
# TensorFlow Datasets
# --------------------------------------------------------------------------------------


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
        threading.Thread(target=probe, args=address, daemon=True)
        for address in _probe_address()
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


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "load_tfds needs tensorflow-datasets: pip install tensorflow-datasets"
        ) from err
    return tfds


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
    try:
        import tensorflow  # noqa: F401
    except ImportError as err:
        raise DatasetUnavailableError(
            f"TFDS data set '{builder.name}' in {builder.data_dir} is stored as "
            f"{builder.info.file_format}, which only TensorFlow can read. Install "
            "tensorflow-cpu, or prepare it again with `tfds build "
            f"{builder.name} --data_dir=DIR --file_format=array_record`."
        ) from err
    return iter(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _tfds_examples(tfds, builder, split: str) -> Iterator[dict]:
    """Examples of `split` as dicts of numpy values, in the stored order."""
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError:  # no random-access (array_record) files on disk
        return _examples_with_tensorflow(tfds, builder, split)
    return (source[i] for i in range(len(source)))


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

    Prepares the data set in `data_dir` (TFDS's default when None) if needed. Raises
    `DatasetUnavailableError` within seconds when it is not there and cannot be
    downloaded, and ValueError for an unknown name or missing features. Grayscale images
    become 3-channel; `image_size` resizes every image (needed when sizes vary).
    """
    tfds = _import_tfds()
    builder = _tfds_builder(tfds, name, data_dir)
    _check_features(builder, image_key, label_key)
    if not builder.is_prepared():
        _prepare(tfds, builder, name, download)
    images, labels = [], []
    for example in _tfds_examples(tfds, builder, split):
        images.append(example[image_key])
        labels.append(example[label_key])
    label_feature = builder.info.features[label_key]
    names = tuple(label_feature.names) if label_feature.names else None
    dataset = ArrayDataset(
        images=_stack_images(images, image_size, f"{name}[{split}]"),
        labels=np.asarray(labels, dtype=np.int32),
        num_classes=int(label_feature.num_classes),
        class_names=names,
    )
    logger.info("Read %d examples of %s[%s] from %s", len(dataset), name, split, builder.data_dir)
    return dataset


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def _class_dirs(directory: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in directory.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _reference_classes(root: Path, split: str) -> tuple[str, ...]:
    """The class list every split is labelled with: the train split's folders if there
    is one, so that label i means the same class in train and test."""
    reference_dir = root / "train" if (root / "train").is_dir() else root / split
    classes = _class_dirs(reference_dir)
    if not classes:
        raise UserInputError(f"no class folders in {reference_dir}")
    return tuple(classes)


def _class_files(class_dir: Path) -> list[Path]:
    files = sorted(
        path
        for path in class_dir.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise UserInputError(
            f"class folder {class_dir} holds no images "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return files


class _TooManyPixels(Exception):
    """An image whose header promises more pixels than PIL.Image.MAX_IMAGE_PIXELS."""


class _SizeMismatch(Exception):
    """Image `index` decoded to `shape`, not the shape of the first image."""

    def __init__(self, index: int, shape: tuple[int, ...]):
        super().__init__(index, shape)
        self.index, self.shape = index, shape


# Files decoded per pool task: enough that scheduling costs nothing next to decoding,
# few enough that the threads stay balanced and a size mismatch stops the load soon.
_FILES_PER_TASK = 64
# Unreadable files named one per line in an error or warning; the rest are counted.
_MAX_LISTED_BAD_FILES = 20


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def _check_pixel_count(image) -> None:
    """Reject an image from its header alone, before decoding a possible bomb.

    PIL itself only warns between MAX_IMAGE_PIXELS and twice that, so a 12000x12000
    image would be decoded (432 MB) without this. Its own knob is kept as the limit:
    setting PIL.Image.MAX_IMAGE_PIXELS = None allows any size here too.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise _TooManyPixels(
            f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS): a decompression bomb, or raise that limit"
        )


def _decode_image(path: Path, size: int | None) -> np.ndarray:
    """One image file as (H, W, 3) uint8 RGB, resized (bilinear) to (size, size) if set.

    Raises OSError, SyntaxError, ValueError, PIL's DecompressionBombError or
    _TooManyPixels for a file that cannot be decoded: `load()` reads all the pixel data,
    so a truncated file fails here and not later.
    """
    from PIL import Image

    with Image.open(path) as image:
        _check_pixel_count(image)
        box = None
        if size is not None and image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: far faster and smaller than a
            # full decode when downscaling a lot. It picks the largest reduction that
            # keeps both sides >= size, so an image less than twice the target decodes
            # in full, exactly as without it; larger ones differ slightly in pixels
            # from full decode + resize. `box` maps the scaled image back onto the
            # original's area for the resize, as Image.thumbnail does (None: no draft).
            drafted = image.draft("RGB", (size, size))
            box = drafted[1] if drafted else None
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if size is not None and rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, box=box)
        return np.asarray(rgb)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _bad_image_reason(path: Path, err: Exception) -> str:
    from PIL import Image

    if isinstance(err, _TooManyPixels):
        return str(err)
    if isinstance(err, Image.UnidentifiedImageError):
        return "empty file" if _is_empty(path) else "not an image file PIL can read"
    return f"cannot decode ({type(err).__name__}: {err})"


def _read_or_reason(path: Path, size: int | None) -> tuple[np.ndarray | None, str | None]:
    """`(image, None)`, or `(None, why)` when the file cannot be decoded."""
    from PIL import Image

    try:
        return _decode_image(path, size), None
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        _TooManyPixels,
    ) as err:
        return None, _bad_image_reason(path, err)


def _read_into(
    out: np.ndarray, files: Sequence[Path], indices: range, size: int | None
) -> list[tuple[int, str]]:
    """Decode `files[indices]` into the rows `out[indices]`, one image at a time.

    Returns the (index, reason) of each unreadable file (its row is left unwritten) and
    raises _SizeMismatch at the first image whose shape is not `out`'s row shape.
    """
    bad = []
    for index in indices:
        image, reason = _read_or_reason(files[index], size)
        if reason is not None:
            bad.append((index, reason))
        elif image.shape != out.shape[1:]:
            raise _SizeMismatch(index, image.shape)
        else:
            out[index] = image
    return bad


def _first_readable(
    files: Sequence[Path], size: int | None
) -> tuple[int, np.ndarray | None, list[tuple[int, str]]]:
    """`(index, image, bad)`: the first file that decodes, and the ones before it that
    did not. `index` is len(files) and `image` None when none decodes."""
    bad = []
    for index, path in enumerate(files):
        image, reason = _read_or_reason(path, size)
        if reason is None:
            return index, image, bad
        bad.append((index, reason))
    return len(files), None, bad


def _size_mismatch_message(
    source: str,
    files: Sequence[Path],
    first: int,
    first_shape: tuple[int, ...],
    err: _SizeMismatch,
) -> str:
    def width_x_height(shape: tuple[int, ...]) -> str:
        return f"{shape[1]}x{shape[0]}"

    return (
        f"images in {source} have different sizes: {files[err.index]} is "
        f"{width_x_height(err.shape)} but {files[first]} is {width_x_height(first_shape)} "
        f"(width x height); {_RESIZE_ADVICE}"
    )


def _read_rest(
    out: np.ndarray, files: Sequence[Path], first: int, size: int | None, workers: int
) -> list[tuple[int, str]]:
    """Decode `files[first + 1:]` into `out` with `workers` threads; the (index, reason)
    of the unreadable ones, in file order. Raises _SizeMismatch for the first image, in
    file order, whose shape differs from `out`'s rows."""
    tasks = [
        range(start, min(start + _FILES_PER_TASK, len(files)))
        for start in range(first + 1, len(files), _FILES_PER_TASK)
    ]
    bad = []
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="load_image_folder")
    try:
        futures = [pool.submit(_read_into, out, files, task, size) for task in tasks]
        for future in futures:
            bad.extend(future.result())
    finally:
        # After an error or Ctrl-C, start no more tasks (a plain `with` would run them all).
        pool.shutdown(cancel_futures=True)
    return bad


def _read_images(
    files: Sequence[Path], size: int | None, workers: int, source: str
) -> tuple[np.ndarray | None, list[tuple[int, str]]]:
    """All `files` decoded into one preallocated (N, H, W, 3) uint8 array by `workers`
    threads, and the (index, reason) of the unreadable ones, whose rows are unwritten
    (the array is None when no file is readable).

    Each thread holds one decoded image at a time, so the peak memory is the result
    plus a few full-size images, not every full-size image as a list would. Threads
    suffice because PIL releases the GIL while it decodes and resizes. The first
    readable image fixes the shape when `size` is None; a different one is an error.
    """
    from PIL import Image

    with warnings.catch_warnings():
        # _check_pixel_count reports these images; PIL's warning would only repeat it.
        # Warning filters are process-wide, so this covers the worker threads too.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        first, image, bad = _first_readable(files, size)
        if image is None:
            return None, bad
        out = np.empty((len(files), *image.shape), np.uint8)
        out[first] = image
        try:
            bad += _read_rest(out, files, first, size, workers)
        except _SizeMismatch as err:
            message = _size_mismatch_message(source, files, first, image.shape, err)
            raise UserInputError(message) from None
    return out, bad


def _listing(bad: Sequence[tuple[str, str]]) -> str:
    lines = [f"  {path}: {reason}" for path, reason in bad[:_MAX_LISTED_BAD_FILES]]
    if len(bad) > _MAX_LISTED_BAD_FILES:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED_BAD_FILES} more")
    return "\n".join(lines)


def _bad_images_error(
    bad_files: Sequence[tuple[str, str]], total: int, split_dir: Path, skippable: bool
) -> BadImagesError:
    if not skippable:
        headline = f"none of the {total} image files in {split_dir} can be read"
        advice = ""
    else:
        headline = f"{len(bad_files)} of {total} image files in {split_dir} cannot be read"
        advice = (
            "\nFix or remove them, or set data.skip_bad_images=True (config) / "
            "skip_bad=True (load_image_folder) to skip them"
        )
    return BadImagesError(f"{headline}:\n{_listing(bad_files)}{advice}", tuple(bad_files))


def _without_rows(array: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """`array` without the sorted `rows`, compacted in place: np.delete would copy the
    whole array and double the peak memory to drop a few unreadable files."""
    keep = np.setdiff1d(np.arange(len(array)), rows)
    for target in range(rows[0], len(keep)):
        array[target] = array[keep[target]]
    return array[: len(keep)]


def load_image_folder(
    root: str | Path,
    split: str,
    image_size: int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> ArrayDataset:
    """Read `root/<split>/<class>/*.{jpg,png,...}` into an `ArrayDataset`.

    Classes are the sorted folder names of `root/train` (or of the split itself when
    there is no train split), or `class_names` when given, so labels agree across
    splits; a split may lack a class, but a class folder unknown to that list is an
    error. Images are decoded to RGB with PIL by `workers` threads (default
    min(8, CPUs)) and resized to `image_size` if it is set; without it they must all
    have the first image's size.

    Every file is decoded in full, so truncated and corrupt files are found here.
    After the whole split is read, unreadable files raise one `BadImagesError` that
    lists them, or with `skip_bad=True` are left out with a warning and recorded in
    `skipped_files`. Images over PIL.Image.MAX_IMAGE_PIXELS count as unreadable.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist")
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"split folder {split_dir} does not exist; splits in {root}: {_class_dirs(root)}"
        )
    if image_size is not None and image_size < 1:
        raise UserInputError(f"image_size must be a side in pixels or None, got {image_size}")
    workers = _default_workers() if workers is None else workers
    if workers < 1:
        raise UserInputError(f"workers must be at least 1, got {workers}")
    classes = tuple(class_names) if class_names is not None else _reference_classes(root, split)
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise UserInputError(
            f"class folders {unknown} in {split_dir} are not among the known classes "
            f"{list(classes)}"
        )
    files, labels = [], []
    for label, class_name in enumerate(classes):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            continue
        class_files = _class_files(class_dir)
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    if not files:
        raise UserInputError(f"split folder {split_dir} holds no class folders")
    start = time.monotonic()
    images, bad = _read_images(files, image_size, workers, str(split_dir))
    labels = np.asarray(labels, dtype=np.int32)
    bad_files = [(str(files[index]), reason) for index, reason in bad]
    if images is None or (bad and not skip_bad):
        # Reported only now, with the whole split read, so that one run names them all.
        raise _bad_images_error(bad_files, len(files), split_dir, skippable=images is not None)
    if bad:
        warnings.warn(
            f"skipped {len(bad)} of {len(files)} image files in {split_dir} that cannot "
            f"be read:\n{_listing(bad_files)}",
            stacklevel=2,
        )
        bad_rows = [index for index, _ in bad]
        images = _without_rows(images, bad_rows)
        labels = np.delete(labels, bad_rows)
    logger.info(
        "Read %d images from %s in %.1f s with %d threads (%d unreadable skipped)",
        len(images), split_dir, time.monotonic() - start, workers, len(bad),
    )
    return ArrayDataset(
        images=images,
        labels=labels,
        num_classes=len(classes),
        class_names=classes,
        skipped_files=tuple(path for path, _ in bad_files),
    )


# --------------------------------------------------------------------------------------
# The offline demo data set
# --------------------------------------------------------------------------------------


def load_digits(
    seed: int = 0, image_size: int = 32, test_fraction: float = 0.25
) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's handwritten digits (1,797 8x8 images, 10 classes) as `(train, test)`.

    A real data set that needs no network: the files ship inside scikit-learn. Pixel
    values 0..16 are scaled to 0..255, the images upscaled (bilinear) to
    `image_size` x `image_size` RGB, and the split is stratified and seeded.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = _stack_images(list(gray), image_size, "scikit-learn digits")
    dataset = ArrayDataset(
        images=images,
        labels=digits.target.astype(np.int32),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
    )
    train, test = train_test_split(
        np.arange(len(dataset)),
        test_size=test_fraction,
        random_state=seed,
        stratify=dataset.labels,
    )
    return dataset.take(np.sort(train)), dataset.take(np.sort(test))


# --------------------------------------------------------------------------------------
# Index batches
# --------------------------------------------------------------------------------------


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches `epoch_batches` makes for one epoch."""
    if num_examples < 0 or batch_size < 1:
        raise UserInputError(
            f"need num_examples >= 0 and batch_size >= 1, got {num_examples}, {batch_size}"
        )
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def epoch_batches(
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_remainder: bool = True,
) -> np.ndarray:
    """(steps, batch_size) int32 example indices of one epoch, a function of (seed, epoch).

    Deriving the permutation from (seed, epoch) alone, with no carried generator state,
    lets a run resumed from a checkpoint see exactly the batches it would have seen.
    With `drop_remainder=False` the last batch is filled up with the first indices of
    the same permutation, keeping the fixed batch shape the jitted step needs.
    """
    steps = steps_per_epoch(num_examples, batch_size, drop_remainder)
    if steps == 0:
        raise UserInputError(
            f"batch_size={batch_size} exceeds the {num_examples} examples: "
            "an epoch has no full batch"
        )
    if seed < 0 or epoch < 0:
        raise UserInputError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
    needed = steps * batch_size
    if needed > num_examples:
        permutation = np.concatenate([permutation, permutation[: needed - num_examples]])
    return permutation[:needed].reshape(steps, batch_size).astype(np.int32)


def eval_batches(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`(indices, mask)`, both (steps, batch_size): every example exactly once, in order.

    The last batch is padded with index 0 and mask False, so evaluation runs one compiled
    shape and metrics count only the real examples.
    """
    if num_examples < 1:
        raise UserInputError(f"need at least one example, got {num_examples}")
    steps = steps_per_epoch(num_examples, batch_size, drop_remainder=False)
    positions = np.arange(steps * batch_size)
    mask = positions < num_examples
    indices = np.where(mask, positions, 0).astype(np.int32)
    return indices.reshape(steps, batch_size), mask.reshape(steps, batch_size)
