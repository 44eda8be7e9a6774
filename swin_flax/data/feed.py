"""The batch for step s, the same whether the data is resident or streamed.

    DataFeed(data, ...).train(...)       the global (images, labels) of steps start..stop-1
    DataFeed(data, ...).evaluation(...)  every example once, in order: (images, labels, mask)

Both give global jax arrays sharded over the mesh's data axis (`sharding`): a uint8
(batch, H, W, 3) image batch and its int32 labels, which the jitted step augments. The
examples of step s are `epoch_batches(seed, epoch)[position]` in both placements:

  * resident (`ArrayDataset`, data.placement=device): the whole split is put on every
    device once (`replicated`); a small jitted gather takes each step's rows from it;
  * streamed (`StreamedDataset`, data.placement=stream): each process decodes only its
    contiguous share of every global batch (the rows its devices hold,
    `process_rows`), and `jax.make_array_from_process_local_data` joins the shares.

So a streamed run and a resident run give the same batches, hence the same parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import jax
import numpy as np

from swin_flax.data.batches import epoch_batches
from swin_flax.data.batches import eval_batches as eval_order
from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.stream import PADDING, LocalBatches


def put_global(value: np.ndarray, sharding) -> jax.Array:
    """A global array from a numpy value every process holds in full."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def process_rows(sharding, global_batch: int) -> slice:
    """The rows of a (global_batch, ...) array that this process's devices hold: one
    contiguous slice (a mesh over `jax.devices()` keeps each process's devices together)."""
    spans = {
        (index[0].start or 0, global_batch if index[0].stop is None else index[0].stop)
        for index in sharding.addressable_devices_indices_map((global_batch,)).values()
    }
    start, stop = min(s for s, _ in spans), max(e for _, e in spans)
    if sum(e - s for s, e in spans) != stop - start:
        raise ValueError(f"this process's rows of the batch are not contiguous: {sorted(spans)}")
    return slice(start, stop)


class Batches:
    """An iterator of global batches; `close()` stops a streamed split's decoding threads."""

    def __init__(self, batches: Iterator, local: LocalBatches | None = None):
        self._batches, self._local = batches, local

    def __iter__(self) -> Batches:
        return self

    def __next__(self):
        return next(self._batches)

    def close(self) -> None:
        if self._local is not None:
            self._local.close()


class EpochOrder:
    """The example indices of step s of a run: `epoch_batches(seed, epoch)[position]`, the
    current epoch's permutation computed once."""

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.steps_per_epoch = num_examples // batch_size
        self._epoch, self._order = -1, None

    def __call__(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._order = epoch_batches(
                self.num_examples, self.batch_size, seed=self.seed, epoch=epoch
            )
            self._epoch = epoch
        return self._order[position]


@functools.lru_cache(maxsize=16)
def batch_gather(sharding) -> Callable:
    """images[indices], labels[indices] of a resident split, sharded like the indices."""
    return jax.jit(
        lambda images, labels, indices: (images[indices], labels[indices]),
        out_shardings=(sharding, sharding),
    )


def _join(sharding, local: np.ndarray, global_rows: int) -> jax.Array:
    return jax.make_array_from_process_local_data(sharding, local, (global_rows, *local.shape[1:]))


class DataFeed:
    """The batches of one data set on one mesh: `sharding` splits a batch over the data
    axis, `replicated` copies to every device (where a resident split is put, once)."""

    def __init__(self, data, *, sharding, replicated):
        self.data, self.sharding, self.replicated = data, sharding, replicated
        self.resident = isinstance(data, ArrayDataset)
        self._placed: tuple[jax.Array, jax.Array] | None = None

    def _gathered(self, indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        if self._placed is None:
            self._placed = (
                put_global(self.data.images, self.replicated),
                put_global(self.data.labels, self.replicated),
            )
        return batch_gather(self.sharding)(*self._placed, put_global(indices, self.sharding))

    def _streamed(self, rows_of_step: Callable, start: int, stop: int, batch_size: int):
        rows = process_rows(self.sharding, batch_size)
        local = self.data.local_batches(lambda step: rows_of_step(step)[rows], start, stop)
        joined = (
            (_join(self.sharding, images, batch_size), _join(self.sharding, labels, batch_size))
            for images, labels in local
        )
        return joined, local

    def train(self, *, seed: int, batch_size: int, start_step: int, stop_step: int) -> Batches:
        """The global (images, labels) of steps start_step..stop_step-1 of a run (epochs of
        len(data) // batch_size steps, the remainder dropped)."""
        order = EpochOrder(len(self.data), batch_size, seed)
        steps = range(start_step, stop_step)
        if self.resident:
            return Batches(self._gathered(order(step)) for step in steps)
        return Batches(*self._streamed(order, start_step, stop_step, batch_size))

    def evaluation(self, batch_size: int) -> Batches:
        """Every example once, in order: (images, labels, mask) of batch_size rows each,
        the last batch padded (mask False) so that one compiled shape serves the split."""
        indices, mask = eval_order(len(self.data), batch_size)
        masks = [put_global(m, self.sharding) for m in mask]
        if self.resident:
            return Batches((*self._gathered(i), m) for i, m in zip(indices, masks))
        positions = np.where(mask, indices, PADDING)
        joined, local = self._streamed(lambda step: positions[step], 0, len(positions), batch_size)
        return Batches(((*batch, m) for batch, m in zip(joined, masks)), local)
