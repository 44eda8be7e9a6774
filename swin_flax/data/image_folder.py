"""A `root/<split>/<class>/*.jpg` tree -> `ArrayDataset` (`load_image_folder`): listed
(`list_image_folder`: sorted files and labels, nothing decoded), then decoded
(`decode_listing`, all of it or the rows a subset keeps).

Images are decoded (`swin_flax.data.images.decode_image`) by a pool of threads straight
into one preallocated array, one image at a time per thread, so the peak memory is the
result plus a few full-size images.
Unreadable files (truncated, empty, not an image, over PIL.Image.MAX_IMAGE_PIXELS: a
decompression bomb is rejected from its header; broken or looping symbolic links with an
image suffix) are all reported in one `BadImagesError`
after the whole split is read, or skipped with `skip_bad=True`. Subfolders of a class
folder and files without an image suffix are not read; one `note:` line per split counts
them and names the first few.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.folder_listing import FolderListing, broken_link_reason, list_image_folder
from swin_flax.data.images import RESIZE_ADVICE, decode_image
from swin_flax.errors import BadImagesError, UserInputError

logger = logging.getLogger(__name__)


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


def _read_or_reason(path: Path, size: int | None) -> tuple[np.ndarray | None, str | None]:
    """`(image, None)`, or `(None, why)` when the file cannot be decoded."""
    try:
        return decode_image(path, size), None
    except BadImagesError as err:
        return None, broken_link_reason(path) or err.bad_files[0][1]


def _read_into(
    out: np.ndarray,
    files: Sequence[Path],
    indices: range,
    size: int | None,
    stop: threading.Event | None = None,
) -> list[tuple[int, str]]:
    """Decode `files[indices]` into the rows `out[indices]`, one image at a time, until
    `stop` is set (the caller gave up: an error, a Ctrl-C).

    Returns the (index, reason) of each unreadable file (its row is left unwritten) and
    raises _SizeMismatch at the first image whose shape is not `out`'s row shape.
    """
    bad = []
    for index in indices:
        if stop is not None and stop.is_set():
            break
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
        f"(width x height); {RESIZE_ADVICE}"
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
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="load_image_folder")
    try:
        futures = [pool.submit(_read_into, out, files, task, size, stop) for task in tasks]
        for future in futures:
            bad.extend(future.result())
    finally:
        # After an error or Ctrl-C (`preemption.stop_at_once` raises here), start no more
        # tasks and end the running ones after their current image: a plain `with` would
        # decode the whole split first.
        stop.set()
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
        # decode_image rejects these images with a reason; PIL's warning would only
        # repeat it. Warning filters are process-wide, so this covers the worker threads too.
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


def decode_listing(
    listing: FolderListing,
    rows: Sequence[int] | None = None,
    image_size: int | None = None,
    *,
    skip_bad: bool = False,
    workers: int | None = None,
) -> ArrayDataset:
    """The files `rows` of a listing (all when None) decoded into an `ArrayDataset` by
    `workers` threads (default min(8, CPUs)), each resized to `image_size` if it is set;
    without it they must all have the first image's size.

    Every file is decoded in full, so truncated and corrupt files are found here. After
    all are read, unreadable files raise one `BadImagesError` that lists them, or with
    `skip_bad=True` are left out with a warning and recorded in `skipped_files`.
    """
    if image_size is not None and image_size < 1:
        raise UserInputError(f"image_size must be a side in pixels or None, got {image_size}")
    workers = _workers(workers)
    rows = np.arange(len(listing)) if rows is None else np.asarray(rows, np.int64)
    files = [listing.files[row] for row in rows]
    split_dir = listing.split_dir
    start = time.monotonic()
    images, bad = _read_images(files, image_size, workers, str(split_dir))
    labels = listing.labels[rows]
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
        len(images),
        split_dir,
        time.monotonic() - start,
        workers,
        len(bad),
    )
    return ArrayDataset(
        images=images,
        labels=labels,
        num_classes=len(listing.classes),
        class_names=listing.classes,
        skipped_files=tuple(path for path, _ in (*listing.skipped, *bad_files)),
    )


def _workers(workers: int | None) -> int:
    workers = _default_workers() if workers is None else workers
    if workers < 1:
        raise UserInputError(f"workers must be at least 1, got {workers}")
    return workers


def load_image_folder(
    root: str | Path,
    split: str,
    image_size: int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> ArrayDataset:
    """Read `root/<split>/<class>/*.{jpg,png,...}` into an `ArrayDataset`: the listing of
    `list_image_folder` decoded by `decode_listing` (labels, classes, unreadable files and
    threads as those say). Images over PIL.Image.MAX_IMAGE_PIXELS count as unreadable."""
    listing = list_image_folder(root, split, class_names=class_names)
    return decode_listing(listing, None, image_size, skip_bad=skip_bad, workers=workers)
