"""The user's images for an export: the calibration set of int8 (`--calibration DIR`) and
the evaluation set (`--evaluate DIR` or `--evaluate tfds:NAME[:SPLIT]`), both decoded by
`swin_flax.data.images.decode_image` and preprocessed as in evaluation
(`runners.preprocess_images`), one image at a time, so images of any size are welcome.

Calibration: any folder of images, searched recursively (a run's training split with its
class folders, or a flat folder). `count` images are chosen with `seed`: each folder's files
are shuffled, then taken from the folders in turn, so every class is represented; the same
seed gives the same images, in the same order.

Evaluation: DIR/<class>/<image> (every image is used) or a TFDS split. A class is matched to
the checkpoint's class by its name when the checkpoint stores class names (a folder the
checkpoint does not know is an error that lists both); without stored names the i-th class
folder in sorted order is taken as class i, and the export says so.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from swin_flax import cli
from swin_flax.data.folder_listing import IMAGE_EXTENSIONS
from swin_flax.data.images import decode_image
from swin_flax.deploy.runners import preprocess_images
from swin_flax.errors import BadImagesError, UserInputError

DEFAULT_CALIBRATION_COUNT = 300
TFDS_PREFIX = "tfds:"
# Preprocessed evaluation batches are kept in memory after the first pass up to this size
# (CIFAR-10's 10,000 test images at 32 px: 123 MB), so that several exports of one
# deployment table decode the images once.
_CACHE_LIMIT_BYTES = 1 << 30
_MAX_LISTED = 20


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _existing_dir(path, option: str) -> Path:
    path = Path(os.fspath(path))
    if not path.exists():
        raise UserInputError(f"{option} {path}: no such folder")
    if not path.is_dir():
        raise UserInputError(f"{option} {path} is a file; give a folder of images")
    return path


# --------------------------------------------------------------------------------------
# Calibration.


def calibration_files(directory, count: int = DEFAULT_CALIBRATION_COUNT, seed: int = 0):
    """`count` image files under `directory` (fewer if it has fewer), seeded, one folder
    after another in turn (see the module docstring)."""
    if count < 1:
        raise UserInputError(f"the calibration count must be at least 1, got {count}")
    root = _existing_dir(directory, "--calibration")
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    groups = [files for folder in folders if (files := _image_files(folder))]
    if not groups:
        raise UserInputError(
            f"--calibration {root} holds no images (looked for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}, in it and its subfolders)"
        )
    rng = np.random.default_rng(seed)
    shuffled = [[files[i] for i in rng.permutation(len(files))] for files in groups]
    chosen = []
    for position in range(max(len(files) for files in shuffled)):
        chosen += [files[position] for files in shuffled if position < len(files)]
        if len(chosen) >= count:
            break
    return chosen[:count]


def calibration_images(
    directory, img_size: int, count: int = DEFAULT_CALIBRATION_COUNT, seed: int = 0
) -> tuple[np.ndarray, str]:
    """(preprocessed NHWC float32 images, description) for int8 calibration."""
    files = calibration_files(directory, count, seed)
    images = preprocess_images(_decode_all(files), img_size)
    if len(files) < count:
        cli.note(f"--calibration {directory} holds only {len(files)} images; calibrating on all")
    return images, f"{len(files)} images from {directory} (seed {seed})"


def _decode_all(files: Sequence[Path]) -> list[np.ndarray]:
    """Every file decoded; the unreadable ones all named in one BadImagesError."""
    images, bad = [], []
    for path in files:
        try:
            images.append(decode_image(path))
        except BadImagesError as err:
            bad += err.bad_files
    if bad:
        raise _bad_images(bad, len(files))
    return images


def _bad_images(bad: Sequence[tuple[str, str]], total: int) -> BadImagesError:
    lines = [f"  {path}: {reason}" for path, reason in bad[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    listing = "\n".join(lines)
    return BadImagesError(f"{len(bad)} of {total} images cannot be read:\n{listing}", tuple(bad))


# --------------------------------------------------------------------------------------
# Evaluation.


def label_map(
    found: Sequence[str], known: Sequence[str] | None, num_classes: int, where: str
) -> list[int]:
    """The checkpoint's class index of each class of the evaluation set (see the module
    docstring); a mismatch is one error that lists both."""
    if known is not None:
        unknown = [name for name in found if name not in known]
        if unknown:
            raise UserInputError(
                f"{where} has classes {unknown} that the checkpoint does not know: its "
                f"classes are {list(known)}. Name the class folders like the checkpoint's "
                "classes (the labels are matched by name)"
            )
        return [list(known).index(name) for name in found]
    if len(found) > num_classes:
        raise UserInputError(
            f"{where} has {len(found)} classes but the model has {num_classes} outputs"
        )
    cli.note(
        f"the checkpoint stores no class names: class {found[0]!r} of {where} is taken as "
        f"class 0, ..., {found[-1]!r} as class {len(found) - 1}"
    )
    return list(range(len(found)))


@dataclasses.dataclass(eq=False)
class EvaluationSet:
    """Labelled images to measure an export on: files decoded per batch, or in memory."""

    description: str
    labels: np.ndarray  # (N,) int32, in the checkpoint's class indices
    files: list[Path] | None = None
    images_uint8: np.ndarray | list | None = None  # a TFDS split's images
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(
        self, img_size: int, batch_size: int = 64
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(preprocessed NHWC float32 images, labels) in order; every unreadable file is
        named in one BadImagesError once the others are through."""
        key = (img_size, batch_size)
        if key in self._cache:
            yield from self._cache[key]
            return
        kept: list | None = []  # None once the batches outgrow the cache
        bad: list[tuple[str, str]] = []
        for start in range(0, len(self), batch_size):
            decoded, labels = self._decoded(start, start + batch_size, bad)
            if not decoded:
                continue
            batch = (preprocess_images(decoded, img_size), labels)
            if kept is not None:
                kept.append(batch)
                if sum(images.nbytes for images, _ in kept) > _CACHE_LIMIT_BYTES:
                    kept = None
            yield batch
        if bad:
            raise _bad_images(bad, len(self))
        if kept is not None:
            self._cache[key] = kept

    def _decoded(self, start: int, stop: int, bad: list) -> tuple[list, np.ndarray]:
        if self.files is None:
            return list(self.images_uint8[start:stop]), self.labels[start:stop]
        images, labels = [], []
        for path, label in zip(self.files[start:stop], self.labels[start:stop]):
            try:
                images.append(decode_image(path))
                labels.append(label)
            except BadImagesError as err:
                bad += err.bad_files
        return images, np.asarray(labels, np.int32)

    def sample(self, img_size: int, count: int = 10) -> np.ndarray:
        """Up to `count` preprocessed images, taking each class's first images in turn:
        the parity check's images."""
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(self.labels):
            by_class.setdefault(int(label), []).append(index)
        picks: list[int] = []
        for position in range(count):
            picks += [ids[position] for ids in by_class.values() if position < len(ids)]
        picks = sorted(picks[:count])
        if self.files is None:
            return preprocess_images([self.images_uint8[i] for i in picks], img_size)
        return preprocess_images(_decode_all([self.files[i] for i in picks]), img_size)


def evaluation_set(spec, class_names: Sequence[str] | None, num_classes: int) -> EvaluationSet:
    """`spec`: a folder of class folders, or 'tfds:NAME[:SPLIT]' (split 'test' by default)."""
    text = os.fspath(spec)
    if text.startswith(TFDS_PREFIX):
        return _tfds_set(text[len(TFDS_PREFIX) :], class_names, num_classes)
    return _folder_set(text, class_names, num_classes)


def _folder_set(directory, class_names, num_classes) -> EvaluationSet:
    root = _existing_dir(directory, "--evaluate")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserInputError(
            f"--evaluate {root} holds no class folders: give a folder with one subfolder "
            "of images per class (e.g. a run's test split), or tfds:NAME[:SPLIT]"
        )
    where = f"--evaluate {root}"
    if class_names is not None and not set(classes) & set(class_names):
        nested = all(any(p.is_dir() for p in (root / c).iterdir()) for c in classes)
        if nested:
            where += f" (holds splits {classes}? give one of them, e.g. {root / classes[-1]})"
    indices = label_map(classes, class_names, num_classes, where)
    files, labels = [], []
    for name, index in zip(classes, indices):
        found = _image_files(root / name)
        if not found:
            raise UserInputError(f"class folder {root / name} of --evaluate holds no images")
        files += found
        labels += [index] * len(found)
    description = f"{len(files)} images in {len(classes)} class folders of {root}"
    return EvaluationSet(description, np.asarray(labels, np.int32), files=files)


def _tfds_set(text: str, class_names, num_classes) -> EvaluationSet:
    from swin_flax.data.tfds_source import load_tfds

    name, _, split = text.partition(":")
    if not name:
        raise UserInputError("--evaluate tfds:NAME[:SPLIT] needs a data set name")
    split = split or "test"
    dataset = load_tfds(name, split)
    labels = dataset.labels
    where = f"--evaluate tfds:{name}:{split}"
    if dataset.class_names is not None:
        indices = np.asarray(
            label_map(dataset.class_names, class_names, num_classes, where), np.int32
        )
        labels = indices[labels]
    elif int(labels.max()) >= num_classes:
        raise UserInputError(
            f"{where} has labels up to {labels.max()}; the model has {num_classes}"
        )
    description = f"{len(labels)} images of TFDS {name}[{split}]"
    return EvaluationSet(description, labels.astype(np.int32), images_uint8=dataset.images)
