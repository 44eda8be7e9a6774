"""A `root/<split>/<class>/*.jpg` tree -> `ArrayDataset` (`load_image_folder`).

Images are decoded (`swin_flax.data.images.decode_image`) by a pool of threads straight
into one preallocated array, one image at a time per thread, so the peak memory is the
result plus a few full-size images.
Unreadable files (truncated, empty, not an image, over PIL.Image.MAX_IMAGE_PIXELS: a
decompression bomb is rejected from its header) are all reported in one `BadImagesError`
after the whole split is read, or skipped with `skip_bad=True`. Subfolders of a class
folder and files without an image suffix are not read; one `note:` line per split counts
them and names the first few.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from swin_flax import cli
from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.images import RESIZE_ADVICE, decode_image
from swin_flax.errors import BadImagesError, UserInputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


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


def _class_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other entries) of a class folder, each sorted. Subfolders and files
    without an image suffix are not read; hidden entries (.DS_Store) are not even listed."""
    entries = sorted(path for path in class_dir.iterdir() if not path.name.startswith("."))
    files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p for p in entries if not (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)]
    if not files:
        raise UserInputError(
            f"class folder {class_dir} holds no images "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return files, others


# Entries named in the note about what a split's class folders hold besides images.
_MAX_LISTED_IGNORED = 5


def _note_ignored(split_dir: Path, ignored: Sequence[Path]) -> None:
    """One line for what the class folders hold besides images: nested folders are not
    searched, so a user who nested the images learns it here, not from a smaller data set."""
    if not ignored:
        return
    names = [
        f"{p.relative_to(split_dir).as_posix()}{'/' if p.is_dir() else ''}"
        for p in ignored[:_MAX_LISTED_IGNORED]
    ]
    more = len(ignored) - len(names)
    cli.note(
        f"{len(ignored)} entries in the class folders of {split_dir} are not read (folders, "
        f"and files without an image suffix): {', '.join(names)}"
        + (f" and {more} more" if more else "")
    )


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
        return None, err.bad_files[0][1]


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


def list_split(root: str | Path, split: str, class_names: Sequence[str] | None = None):
    """`(split_dir, classes, files, labels, ignored)` of `root/<split>`: what
    `load_image_folder` reads, listed without decoding anything (see its rules)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder root {root} does not exist")
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"split folder {split_dir} does not exist; splits in {root}: {_class_dirs(root)}"
        )
    classes = tuple(class_names) if class_names is not None else _reference_classes(root, split)
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise UserInputError(
            f"class folders {unknown} in {split_dir} are not among the known classes "
            f"{list(classes)}"
        )
    files, labels, ignored = [], [], []
    for label, class_name in enumerate(classes):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            continue
        class_files, others = _class_files(class_dir)
        files.extend(class_files)
        labels.extend([label] * len(class_files))
        ignored.extend(others)
    if not files:
        raise UserInputError(f"split folder {split_dir} holds no class folders")
    return split_dir, classes, files, labels, ignored


def count_image_folder(root: str | Path, split: str) -> tuple[int, int]:
    """(images, classes) of `root/<split>` from its file listing, without decoding: the
    size `load_image_folder` gives unless unreadable files are skipped."""
    _, classes, files, _, _ = list_split(root, split)
    return len(files), len(classes)


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
    if image_size is not None and image_size < 1:
        raise UserInputError(f"image_size must be a side in pixels or None, got {image_size}")
    workers = _default_workers() if workers is None else workers
    if workers < 1:
        raise UserInputError(f"workers must be at least 1, got {workers}")
    split_dir, classes, files, labels, ignored = list_split(root, split, class_names)
    _note_ignored(split_dir, ignored)
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
        len(images),
        split_dir,
        time.monotonic() - start,
        workers,
        len(bad),
    )
    return ArrayDataset(
        images=images,
        labels=labels,
        num_classes=len(classes),
        class_names=classes,
        skipped_files=tuple(path for path, _ in bad_files),
    )
