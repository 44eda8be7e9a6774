"""The in-memory data set every loader returns, and what is done with it.

`ArrayDataset` holds a whole split as two numpy arrays, (N, H, W, 3) uint8 images and (N,)
int32 labels: the data sets this project trains on (CIFAR-100 and friends) are small
enough to keep in accelerator memory. The trainer puts them on the device once; each step
then receives only a batch of *indices* (`epoch_batches`, `eval_batches`), gathers the
images inside the jitted step and augments them there (`swin_flax.data.augment`).

Also here: `split_train_validation` (a seeded validation carve-out) and `stack_images`,
which the loaders (`tfds_source`, `digits`) use to turn decoded images into one array.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from swin_flax.errors import UserInputError

# --------------------------------------------------------------------------------------
# The data set container and the validation split
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
    # What names the data without its pixels (`swin_flax.data.sources.fingerprint`) when it
    # was decoded from a listed source; None: `data_fingerprint` hashes the pixels.
    fingerprint: str | None = None

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

    def take(self, indices: np.ndarray) -> ArrayDataset:
        """The examples at `indices`, with the same classes (for splits and subsets)."""
        return dataclasses.replace(
            self,
            images=self.images[indices],
            labels=self.labels[indices],
            fingerprint=subset_fingerprint(self.fingerprint, indices),
        )


def subset_fingerprint(fingerprint: str | None, indices: np.ndarray) -> str | None:
    """The fingerprint of the examples `indices` of a data set named by `fingerprint`."""
    if fingerprint is None:
        return None
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(np.ascontiguousarray(indices, np.int64).tobytes())
    return digest.hexdigest()


def data_fingerprint(data) -> str:
    """What names a data set's examples: its source's listing when it has one (computed the
    same whether it is resident or streamed), else sha256 of its pixels and labels."""
    if data.fingerprint is not None:
        return data.fingerprint
    digest = hashlib.sha256()
    for array in (data.images, data.labels):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def class_label(ds: ArrayDataset, label: int) -> str:
    return ds.class_names[label] if ds.class_names else f"class {label}"


def check_two_classes(train: ArrayDataset, where: str) -> None:
    """One class has nothing to tell apart: every prediction is right and top-1 is 100.0."""
    present = np.unique(train.labels)
    if len(present) < 2:
        names = ", ".join(class_label(train, int(c)) for c in present) or "none"
        raise UserInputError(
            f"the training split of {where} holds one class ({names}): classification needs "
            "at least two classes, one folder of images each"
        )


def classes_missing(train: ArrayDataset, other: ArrayDataset) -> list[str]:
    """The classes the training split has and `other` (test, validation) lacks: `other`'s
    top-1 is then over fewer classes than the model tells apart."""
    missing = sorted(set(np.unique(train.labels)) - set(np.unique(other.labels)))
    return [class_label(train, int(c)) for c in missing]


def missing_classes_notes(train: ArrayDataset, others: dict[str, ArrayDataset | None]) -> list[str]:
    """One `note:` text per evaluation split that lacks some training classes, naming them."""
    notes = []
    for split, other in others.items():
        missing = classes_missing(train, other) if other is not None else []
        if missing:
            present = len(np.unique(train.labels)) - len(missing)
            notes.append(
                f"the {split} split has no image of {', '.join(missing)} (trained on): "
                f"{split} top-1 is over the other {present} classes"
            )
    return notes


def balanced_subset(ds: ArrayDataset, size: int, seed: int) -> ArrayDataset:
    """`size` examples with the classes as equally represented as the data allows, chosen
    by `seed`, in the original order; 0 (or a size >= the data) keeps everything.

    For budget runs on a slice of a large data set: the same seed gives the same slice.
    """
    if not size or size >= len(ds):
        return ds
    order = np.random.default_rng([seed, size]).permutation(len(ds))
    labels = ds.labels[order]
    # Rank of each example within its class, in the shuffled order: take ranks 0, 1, ...
    # round-robin over the classes until `size` examples are chosen.
    rank = np.zeros(len(ds), np.int64)
    for label in np.unique(labels):
        members = labels == label
        rank[members] = np.arange(members.sum())
    chosen = order[np.lexsort((labels, rank))[:size]]
    return ds.take(np.sort(chosen))


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
