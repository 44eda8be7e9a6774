"""Where a split's examples are read from, one at a time: an image folder or a TFDS split,
listed without decoding anything.

    ImageFolderSource   the sorted (path, label) listing of root/<split>/<class>/*
    TfdsSource          `tfds.data_source` (array_record: random access, no TensorFlow),
                        in `swin_flax.data.tfds_source` with the rest of TFDS

A source knows its length, its classes and (cheaply, for an image folder) its labels, and
`read(i)` decodes example i with the decoder the resident path uses too (`decode_image`
for files; TFDS's own image feature, then `to_rgb` and `resize_rgb`, as `stack_images`), so
an example has the same pixels whether it is decoded into memory or streamed.
`identity()` is what names the data without its pixels: the listing (relative paths, file
sizes, labels), the stored size and the decoder's version; a recording of teacher logits
and a resumed stage compare it instead of hashing every decoded image.

data.skip_bad_images on a listing (`ImageFolderSource(check_headers=True)`) leaves out
the files whose header already shows they cannot be read (empty, not an image, over the
pixel limit) before anything is decoded, in both placements, so both see the same list;
a file whose pixels fail later (truncated) is what only a full decode finds.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import warnings
from typing import Any

import numpy as np

from swin_flax.data.folder_listing import FolderListing
from swin_flax.data.image_folder import _bad_images_error, _listing
from swin_flax.data.images import (
    RESIZE_ADVICE,
    decode_image,
    header_problem,
    image_size_from_header,
)
from swin_flax.errors import BadImagesError, UserInputError


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def pillow_version() -> str:
    import PIL

    return PIL.__version__


def shape_error(name: str, shape: tuple, expected: tuple) -> UserInputError:
    return UserInputError(
        f"{name} is {shape[1]}x{shape[0]} but the split's images are {expected[1]}x"
        f"{expected[0]} (width x height); {RESIZE_ADVICE}"
    )


class ImageFolderSource:
    """A listed image-folder split; `read(i)` decodes file i (resized to `size`)."""

    kind = "image_folder"

    def __init__(self, listing: FolderListing, size: int | None, *, check_headers: bool = False):
        self.listing = _without_bad_headers(listing) if check_headers else listing
        self.size = size
        self.num_classes = len(listing.classes)
        self.class_names = listing.classes
        self._shape: tuple | None = (size, size, 3) if size else None

    def __len__(self) -> int:
        return len(self.listing)

    @property
    def skipped_files(self) -> tuple[str, ...]:
        return tuple(path for path, _ in self.listing.skipped)

    @property
    def labels(self) -> np.ndarray:
        return self.listing.labels

    def image_shape(self) -> tuple[int, int, int]:
        """The (H, W, 3) every read returns: the stored size, or the first readable file's
        (one decode, so that an EXIF rotation counts)."""
        if self._shape is None:
            self._shape = _first_readable(self.listing.files, decode_image).shape
        return self._shape

    def pixels_per_image(self) -> int:
        """H x W of an image as held in memory, from a header alone when not resized."""
        if self.size:
            return self.size * self.size
        height, width = _first_readable(self.listing.files, image_size_from_header)
        return height * width

    def read(self, index: int) -> tuple[np.ndarray, int]:
        path = self.listing.files[index]
        image = decode_image(path, self.size)
        if self.size is None and image.shape != self.image_shape():
            raise shape_error(str(path), image.shape, self.image_shape())
        return image, int(self.listing.labels[index])

    def identity(self) -> dict:
        root = self.listing.split_dir
        entries = [
            f"{path.relative_to(root).as_posix()}|{os.stat(path).st_size}|{label}"
            for path, label in zip(self.listing.files, self.listing.labels)
        ]
        return {
            "source": self.kind,
            "split": root.name,
            "files": hashlib.sha256("\n".join(entries).encode()).hexdigest(),
            "count": len(entries),
            "classes": list(self.class_names),
            "stored_size": self.size or 0,
            "decoder": f"Pillow {pillow_version()}",
        }


def _first_readable(files, read):
    """`read(path)` of the first file it succeeds on (the error of the first when none)."""
    first_error = None
    for path in files:
        try:
            return read(path)
        except (BadImagesError, OSError, SyntaxError, ValueError) as err:
            first_error = first_error or err
    raise first_error


def _without_bad_headers(listing: FolderListing) -> FolderListing:
    """The listing without the files whose header shows they cannot be read, with one
    warning that names them (all unreadable: an error)."""
    import dataclasses

    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="headers") as pool:
        problems = list(pool.map(header_problem, listing.files, chunksize=64))
    bad = [(str(path), why) for path, why in zip(listing.files, problems) if why is not None]
    if not bad:
        return listing
    if len(bad) == len(listing):
        raise _bad_images_error(bad, len(listing), listing.split_dir, skippable=False)
    warnings.warn(
        f"skipped {len(bad)} of {len(listing)} image files in {listing.split_dir} that cannot "
        f"be read:\n{_listing(bad)}",
        stacklevel=3,
    )
    keep = [i for i, why in enumerate(problems) if why is None]
    return dataclasses.replace(
        listing,
        files=tuple(listing.files[i] for i in keep),
        labels=listing.labels[keep],
        skipped=(*listing.skipped, *bad),
    )


def fingerprint(source, indices: np.ndarray) -> str:
    """sha256 of a source's identity and the examples of it a split keeps (its subset)."""
    kept = hashlib.sha256(np.ascontiguousarray(indices, np.int64).tobytes()).hexdigest()
    return _digest({**source.identity(), "indices": kept})


def decode_source(source, indices: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """`(images, labels)`: the examples `indices` of a source decoded into one preallocated
    (N, H, W, 3) array by `workers` threads, one image at a time per thread (no list of N
    images to stack), and their int32 labels."""
    out = np.empty((len(indices), *source.image_shape()), np.uint8)
    labels = np.empty(len(indices), np.int32)

    def fill(rows: range) -> None:
        for row in rows:
            out[row], labels[row] = source.read(int(indices[row]))

    chunks = [range(i, min(i + 64, len(indices))) for i in range(0, len(indices), 64)]
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
    try:
        for future in [pool.submit(fill, chunk) for chunk in chunks]:
            future.result()
    finally:
        pool.shutdown(cancel_futures=True)  # after an error or Ctrl-C, start no more chunks
    return out, labels
