"""The config's data section -> the data sets of a run: the source listed, seeded
class-balanced subsets and a validation carve-out chosen, the placement decided, then the
splits decoded into memory or left to stream.

`open_splits` gives train, test and (with data.validation_fraction) a validation set carved
out of the training subset: the run trains on train, chooses on validation and reports test.
Each is an `ArrayDataset` (data.placement=device: decoded whole) or a `StreamedDataset`
(stream: decoded batch by batch), with one interface (`swin_flax.data.feed`). Subsets and the
carve-out are chosen on the listing, before anything is decoded, so both placements hold the
same examples in the same order. `load_splits` is the resident view (everything decoded);
`load_datasets` the older two-set view, (train, validation or test).
"""

from __future__ import annotations

import dataclasses

import jax

from swin_flax import cli
from swin_flax.data import placement
from swin_flax.data.augment import ResizedCrop
from swin_flax.data.dataset import (
    ArrayDataset,
    balanced_subset,
    check_two_classes,
    missing_classes_notes,
    split_train_validation,
)
from swin_flax.data.digits import load_digits
from swin_flax.data.folder_listing import first_image_size, list_image_folder
from swin_flax.data.image_folder import decode_listing
from swin_flax.data.sources import ImageFolderSource
from swin_flax.data.stream import StreamedDataset
from swin_flax.data.tfds_source import TfdsSource, load_tfds, open_tfds
from swin_flax.errors import BadImagesError, DatasetUnavailableError, UserInputError
from swin_flax.settings import DATA_SOURCES as SOURCES  # declared with data.source's check


@dataclasses.dataclass(frozen=True)
class Splits:
    train: ArrayDataset | StreamedDataset
    test: ArrayDataset | StreamedDataset
    validation: ArrayDataset | StreamedDataset | None = None  # carved out of train, not test

    def present(self) -> list:
        return [d for d in (self.train, self.test, self.validation) if d is not None]


def open_splits(data_config, *, seed: int, placement_override: str | None = None) -> Splits:
    """Train, test and validation sets, resident or streamed as data.placement says
    (`placement_override`: the caller's instead). The training subset (data.train_subset)
    is taken first and the validation fraction carved out of it, so a small-data run
    validates on its own data, not on images it would never have had.

    `seed` only decides how examples are split (digits, subsets, the carve-out): the
    pipeline passes data.split_seed, so runs with different training seeds are scored on
    the same examples. Nothing is decoded before the placement is decided.
    """
    requested = placement_override or getattr(data_config, "placement", "device")
    if data_config.source == "digits":
        if requested == "stream" and jax.process_index() == 0:
            cli.note("data.placement=stream: scikit-learn's 1,797 digits stay resident")
        return _chosen(
            *load_digits(seed=seed, image_size=data_config.stored_size or 32), data_config, seed
        )
    listed = _chosen(*_listed(data_config), data_config, seed)
    decision = placement.decide(requested, listed.present())
    if requested == "auto" and jax.process_index() == 0:
        cli.note(decision.reason)
    if decision.placement == "stream":
        return listed
    return _decoded(listed, data_config)


def load_splits(data_config, *, seed: int) -> Splits:
    """`open_splits` with every split decoded into memory (`ArrayDataset`s)."""
    return open_splits(data_config, seed=seed, placement_override="device")


def load_datasets(data_config, *, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Train set and evaluation set (the validation set when one is carved, else test)."""
    splits = load_splits(data_config, seed=seed)
    return splits.train, splits.validation if splits.validation is not None else splits.test


def _chosen(train, test, data_config, seed: int) -> Splits:
    train = balanced_subset(train, data_config.train_subset, seed)
    test = balanced_subset(test, data_config.test_subset, seed)
    check_two_classes(train, data_config.root or data_config.name or data_config.source)
    validation = None
    if data_config.validation_fraction:
        train, validation = split_train_validation(train, data_config.validation_fraction, seed)
    if jax.process_index() == 0:
        for text in missing_classes_notes(train, {"test": test, "validation": validation}):
            cli.note(text)
    return Splits(train=train, test=test, validation=validation)


def _listed(data_config) -> tuple[StreamedDataset, StreamedDataset]:
    """Train and test as listed sources: nothing decoded."""
    source, size = data_config.source, data_config.stored_size or None
    loader = {
        "workers": getattr(data_config, "workers", 0),
        "prefetch": getattr(data_config, "prefetch", 2),
    }
    splits = (data_config.train_split, data_config.test_split)
    if source == "tfds":
        return tuple(_tfds_split(data_config, split, size, loader) for split in splits)
    if source != "image_folder":
        raise UserInputError(f"data.source must be one of {SOURCES}, got {source!r}")
    sources = [
        ImageFolderSource(
            list_image_folder(data_config.root, split),
            size,
            check_headers=data_config.skip_bad_images,
        )
        for split in splits
    ]
    return tuple(StreamedDataset(s, range(len(s)), **loader) for s in sources)


def _tfds_split(data_config, split: str, size: int | None, loader: dict):
    """A TFDS split as a listed source; one stored as tfrecord (only TensorFlow reads it, in
    order) is decoded whole at once, so it can be resident only."""
    keys = {"image_key": "image", "label_key": "label"}
    builder = open_tfds(
        data_config.name,
        data_config.data_dir or None,
        download=data_config.download,
        **keys,
    )
    try:
        source = TfdsSource(builder, split, size, **keys)
    except DatasetUnavailableError:
        if getattr(data_config, "placement", "device") == "stream":
            raise
        return load_tfds(data_config.name, split, data_config.data_dir or None, image_size=size)
    return StreamedDataset(source, range(len(source)), **loader)


def _decoded(listed: Splits, data_config) -> Splits:
    """Every split decoded into memory, the unreadable files of all of them in one error:
    fixing them one split per run would cost a run per split."""
    decoded, errors = {}, []
    for name in ("train", "test", "validation"):
        data = getattr(listed, name)
        if data is None:
            continue
        try:
            decoded[name] = _resident(data, data_config)
        except BadImagesError as err:
            errors.append(err)
    if errors:
        raise BadImagesError(
            "\n".join(str(e) for e in errors), tuple(f for e in errors for f in e.bad_files)
        )
    return Splits(**decoded)


def _resident(data, data_config) -> ArrayDataset:
    if isinstance(data, ArrayDataset):
        return data
    if not isinstance(data.source, ImageFolderSource):
        return data.resident()
    decoded = decode_listing(
        data.source.listing,
        data.positions,
        data.source.size,
        skip_bad=data_config.skip_bad_images,
        workers=data.thread_count,
    )
    return dataclasses.replace(decoded, fingerprint=data.fingerprint)


def resized_crop(data_config) -> ResizedCrop | None:
    """data.random_resized_crop resolved: timm's RandomResizedCrop with data.crop_scale and
    data.crop_ratio, or None (the padded crop of data.crop_padding).

    'auto' turns it on when the training images are larger than the model input, i.e. their
    shorter stored side exceeds data.image_size (`stored_side`): photos trained at a smaller
    size, where a random box of the photo is worth more than a shift by a few pixels.
    CIFAR-sized images trained at their own size (32 px; or upscaled to 224) keep the CIFAR
    recipe, and so does every source whose size is unknown without decoding it (tfds or
    digits without data.stored_size: set 'on' to use it there).
    """
    mode = data_config.random_resized_crop
    crop = ResizedCrop(tuple(data_config.crop_scale), tuple(data_config.crop_ratio))
    if mode == "on":
        return crop
    if mode == "auto":
        side = stored_side(data_config)
        return crop if side is not None and side > data_config.image_size else None
    return None


def stored_side(data_config) -> int | None:
    """The shorter side of the training images as the run stores them, known without
    decoding them all: data.stored_size when set (every image is resized to it), else for an
    image folder its first training image's (all must share it), else None."""
    if data_config.stored_size:
        return data_config.stored_size
    if data_config.source == "image_folder" and data_config.root:
        size = first_image_size(data_config.root, data_config.train_split)
        return min(size) if size else None
    return None
