"""The user's images for an export: the calibration set of int8 (`--calibration DIR`) and
the evaluation set (`--evaluate DIR` or `--evaluate tfds:NAME[:SPLIT]`), both decoded and
preprocessed as training evaluated its images (`swin_flax.deploy.preprocess.Preprocessing`:
the checkpoint's stored size, then its img_size), one image at a time, so images of any
size are welcome. Where a function takes `preprocessing`, a bare img_size means no stored
size.

Calibration: any folder of images, searched recursively (a run's training split with its
class folders, or a flat folder). `count` images are chosen with `seed`: each folder's files
are shuffled, then taken from the folders in turn, so every class is represented; the same
seed gives the same images, in the same order.

Evaluation: DIR/<class>/<image> (every image is used) or a TFDS split. A class is matched to
the checkpoint's class by its name when the checkpoint stores class names (every stage of
train.py stores them): a folder may hold any subset of the model's classes, and a class the
model does not know is an error that lists both. Without stored names (converted weights,
older runs) the class folders are taken in sorted order as the model's outputs 0, 1, ...,
as training labels them, and the export says so; that needs exactly one folder per output,
so any other count is refused (a subset cannot be mapped without names).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from swin_flax import cli
from swin_flax.data.folder_listing import IMAGE_EXTENSIONS
from swin_flax.deploy.preprocess import Preprocessing, as_preprocessing
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


@dataclasses.dataclass(frozen=True)
class Calibration:
    """int8 calibration images, and images of the same folder it was not calibrated on
    (the parity check's, when there is no --evaluate)."""

    images: np.ndarray  # preprocessed NHWC float32
    files: list[Path]
    description: str
    held_out: np.ndarray | None = None  # preprocessed; None: the folder holds no others


def calibration_set(
    directory,
    preprocessing: Preprocessing | int,
    count: int = DEFAULT_CALIBRATION_COUNT,
    seed: int = 0,
    held_out: int = 0,
) -> Calibration:
    """`count` images chosen with `seed` (`calibration_files`), and up to `held_out` more of
    the folder, the next ones in the same order, so the calibration itself does not depend
    on `held_out`."""
    pre = as_preprocessing(preprocessing)
    files = calibration_files(directory, count + held_out, seed)
    chosen, others = files[:count], files[count:]
    images = pre(_decode_all(chosen, pre))
    if len(chosen) < count:
        cli.note(f"--calibration {directory} holds only {len(chosen)} images; calibrating on all")
    return Calibration(
        images,
        chosen,
        f"{len(chosen)} images from {directory} (seed {seed})",
        pre(_decode_all(others, pre)) if others else None,
    )


def calibration_images(
    directory,
    preprocessing: Preprocessing | int,
    count: int = DEFAULT_CALIBRATION_COUNT,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """(preprocessed NHWC float32 images, description) for int8 calibration."""
    calibration = calibration_set(directory, preprocessing, count, seed)
    return calibration.images, calibration.description


def check_calibration_batches(calibration: Calibration, batch: int | None, where) -> None:
    """int8 calibrates on whole batches of the exported batch size: too few images for
    one batch is refused here, not by the quantizer ("No data is collected")."""
    batch = batch or 1  # a dynamic-batch ONNX file calibrates one image at a time
    count = len(calibration.files)
    if count < batch:
        raise UserInputError(
            f"int8 calibrates on whole batches of the export's batch size {batch}, but "
            f"--calibration {where} gives {count} image(s); give at least {batch} "
            "(--calibration-count, or a folder with more images), or export a smaller --batch"
        )
    if count % batch:
        cli.note(
            f"int8 calibrates on {count - count % batch} of the {count} calibration images "
            f"(whole batches of {batch})"
        )


def shared_images(files: Sequence[Path], eval_set: EvaluationSet) -> list[Path]:
    """The `files` that are also images of `eval_set`: the same file (by any path to it)
    or a copy of one (the same bytes)."""
    if eval_set.files is None:
        return []
    real = {os.path.realpath(p) for p in eval_set.files}
    by_size: dict[int, list[Path]] = {}
    for path in eval_set.files:
        by_size.setdefault(path.stat().st_size, []).append(path)
    shared = []
    for path in files:
        if os.path.realpath(path) in real:
            shared.append(path)
            continue
        same_size = by_size.get(path.stat().st_size, [])
        if same_size and any(_digest(path) == _digest(other) for other in same_size):
            shared.append(path)
    return shared


@functools.lru_cache(maxsize=4096)
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_calibration_unseen(calibration: Calibration, eval_set: EvaluationSet) -> None:
    """Refuse int8 calibrated on images --evaluate scores: the activation ranges would be
    fitted to the very images its top-1 is measured on."""
    shared = shared_images(calibration.files, eval_set)
    if shared:
        raise UserInputError(
            f"--calibration and --evaluate share {len(shared)} of the {len(calibration.files)} "
            f"calibration images (e.g. {shared[0]}): an int8 file calibrated on the images "
            "it is scored on reports a top-1 that unseen images need not reach. Calibrate "
            "on other images of the task, e.g. its training split"
        )


def _decode_all(files: Sequence[Path], pre: Preprocessing) -> list[np.ndarray]:
    """Every file decoded; the unreadable ones all named in one BadImagesError."""
    images, bad = [], []
    for path in files:
        try:
            images.append(pre.decode(path))
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
    if len(found) != num_classes:
        raise UserInputError(
            f"{where} has {len(found)} classes but the model has {num_classes} outputs, and "
            "the checkpoint stores no class names, so which output is which class cannot be "
            f"known; evaluate on all {num_classes} classes, or store the names with the "
            "model: swin_flax.save_checkpoint(..., class_names=[...])"
        )
    cli.note(
        f"the checkpoint stores no class names: the classes of {where} are taken as its "
        f"outputs in the order training labels them, {found[0]!r} as class 0, ..., "
        f"{found[-1]!r} as class {len(found) - 1}"
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
        self, preprocessing: Preprocessing | int, batch_size: int = 64
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(preprocessed NHWC float32 images, labels) in order; every unreadable file is
        named in one BadImagesError once the others are through."""
        pre = as_preprocessing(preprocessing)
        key = (pre, batch_size)
        if key in self._cache:
            yield from self._cache[key]
            return
        kept: list | None = []  # None once the batches outgrow the cache
        bad: list[tuple[str, str]] = []
        for start in range(0, len(self), batch_size):
            decoded, labels = self._decoded(start, start + batch_size, bad, pre)
            if not decoded:
                continue
            batch = (pre(decoded), labels)
            if kept is not None:
                kept.append(batch)
                if sum(images.nbytes for images, _ in kept) > _CACHE_LIMIT_BYTES:
                    kept = None
            yield batch
        if bad:
            raise _bad_images(bad, len(self))
        if kept is not None:
            self._cache[key] = kept

    def _decoded(
        self, start: int, stop: int, bad: list, pre: Preprocessing
    ) -> tuple[list, np.ndarray]:
        if self.files is None:
            images = [pre.stored(image) for image in self.images_uint8[start:stop]]
            return images, self.labels[start:stop]
        images, labels = [], []
        for path, label in zip(self.files[start:stop], self.labels[start:stop]):
            try:
                images.append(pre.decode(path))
                labels.append(label)
            except BadImagesError as err:
                bad += err.bad_files
        return images, np.asarray(labels, np.int32)

    def sample(self, preprocessing: Preprocessing | int, count: int = 10) -> np.ndarray:
        """Up to `count` preprocessed images, taking each class's first images in turn:
        the parity check's images."""
        pre = as_preprocessing(preprocessing)
        by_class: dict[int, list[int]] = {}
        for index, label in enumerate(self.labels):
            by_class.setdefault(int(label), []).append(index)
        picks: list[int] = []
        for position in range(count):
            picks += [ids[position] for ids in by_class.values() if position < len(ids)]
        picks = sorted(picks[:count])
        if self.files is None:
            return pre([pre.stored(self.images_uint8[i]) for i in picks])
        return pre(_decode_all([self.files[i] for i in picks], pre))


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
