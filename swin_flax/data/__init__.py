"""The data a run trains and evaluates on: the config's data section -> train, test, validation.

Start here. `open_splits` turns `config.data` into train, test and validation sets, each
resident (`ArrayDataset`: a whole split as uint8 arrays) or streamed (`StreamedDataset`:
read from disk batch by batch), as data.placement decides; `load_splits` decodes them all.
This package's front re-exports the layer's public names. Each job lives in its own module:

  * `swin_flax.data.load`: `open_splits`, `load_splits`: the config -> train, test and
    validation.
  * `swin_flax.data.placement`: device, stream or auto, decided from the listing's size
    before anything is decoded.
  * `swin_flax.data.sources`: `ImageFolderSource` (a listed image folder, read by index)
    and the data's fingerprint (its listing, not its pixels).
  * `swin_flax.data.stream`: `StreamedDataset`, decoded by grain threads a few batches ahead.
  * `swin_flax.data.feed`: `DataFeed`, the global uint8 batch of step s for either
    placement (a jitted gather, or each process's share joined).
  * `swin_flax.data.dataset`: `ArrayDataset`, `split_train_validation`, `balanced_subset`.
  * `swin_flax.data.batches`: the example order of every step (`epoch_batches`,
    `eval_batches`, `steps_per_epoch`).
  * `swin_flax.data.images`: decoded images -> one uint8 array (`stack_images`).
  * `swin_flax.data.augment`: crop, flip, Mixup/CutMix, resize and normalisation inside
    the jitted step.
  * `swin_flax.data.folder_subset`: a smaller image-folder task carved out of a bigger one.
  * `swin_flax.data.tfds_source`: `load_tfds` and `TfdsSource` (TensorFlow Datasets through
    `tfds.data_source`) and `network_available`, the probe that makes an offline machine
    fail in seconds.
  * `swin_flax.data.image_folder`: `load_image_folder` (a `root/<split>/<class>/*.jpg`
    tree, decoded in parallel threads; unreadable files reported together or skipped).
  * `swin_flax.data.digits`: `load_digits`, scikit-learn's 8x8 digits, which need no
    network: for demos and smoke tests.

`tensorflow_datasets` and scikit-learn are imported inside the functions that need them,
so `import swin_flax.data` works on a machine that has neither.
"""

from __future__ import annotations

from swin_flax.data.batches import epoch_batches, eval_batches, steps_per_epoch

# Everything in __all__ is importable from here, so callers need not know which module
# of the data layer holds it.
from swin_flax.data.dataset import ArrayDataset, balanced_subset, split_train_validation
from swin_flax.data.digits import load_digits
from swin_flax.data.image_folder import load_image_folder
from swin_flax.data.load import SOURCES, Splits, load_datasets, load_splits, open_splits
from swin_flax.data.placement import resident_bytes
from swin_flax.data.stream import StreamedDataset
from swin_flax.data.tfds_source import load_tfds, network_available
from swin_flax.errors import BadImagesError, DatasetUnavailableError

__all__ = [
    "ArrayDataset",
    "balanced_subset",
    "BadImagesError",
    "DatasetUnavailableError",
    "SOURCES",
    "Splits",
    "epoch_batches",
    "eval_batches",
    "load_datasets",
    "load_splits",
    "open_splits",
    "resident_bytes",
    "StreamedDataset",
    "load_digits",
    "load_image_folder",
    "load_tfds",
    "network_available",
    "split_train_validation",
    "steps_per_epoch",
]
