"""The data a run trains and evaluates on: the config's data section -> train, test, validation.

Start here. `load_splits` turns `config.data` into `ArrayDataset`s, whole splits held as
uint8 arrays; this package's front re-exports the layer's public names. Each job lives in
its own module:

  * `swin_flax.data.load`: `load_splits`, the config -> train, test and validation.
  * `swin_flax.data.dataset`: `ArrayDataset`, `split_train_validation`, `balanced_subset`.
  * `swin_flax.data.batches`: the index batches that feed the train step (`epoch_batches`,
    `eval_batches`, `steps_per_epoch`).
  * `swin_flax.data.images`: decoded images -> one uint8 array (`stack_images`).
  * `swin_flax.data.augment`: crop, flip, Mixup/CutMix, resize and normalisation inside
    the jitted step.
  * `swin_flax.data.folder_subset`: a smaller image-folder task carved out of a bigger one.
  * `swin_flax.data.tfds_source`: `load_tfds` (TensorFlow Datasets) and `network_available`,
    the probe that makes an offline machine fail in seconds.
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
from swin_flax.data.load import SOURCES, Splits, load_datasets, load_splits
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
    "load_digits",
    "load_image_folder",
    "load_tfds",
    "network_available",
    "split_train_validation",
    "steps_per_epoch",
]
