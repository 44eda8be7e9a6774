"""A split read from disk batch by batch (data.placement=stream): `StreamedDataset`.

Only a source (`swin_flax.data.sources`) and the positions of the examples the split keeps
are held; nothing is decoded until a batch is asked for. `local_batches` decodes, for each
step, the examples of this process's rows of the global batch with grain: a
`grain.MapDataset` over the (step, row) positions in order, decoded by `workers` threads
(PIL releases the GIL while it decodes and resizes, so threads scale over cores without
pickling the source into worker processes, and leave no process behind), prefetching
`prefetch` batches ahead, then batched. The order is computed here, not by grain's
samplers: the batch at step s is `epoch_batches(seed, epoch)[position]` in either
placement (`swin_flax.data.feed`), so a streamed run and a resident run see the same
examples in the same order, and a resumed run starts its pipeline at its step.
Host memory is the prefetch buffer, workers x one image and the listing, whatever the
split's size.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.sources import decode_source, fingerprint

# Where a batch row is padding (the last evaluation batch): zeros, label 0, masked out.
PADDING = -1


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclasses.dataclass(eq=False)
class StreamedDataset:
    """The examples `positions` of `source`, decoded on demand.

    The same interface as `ArrayDataset` where a run needs it without pixels (length,
    classes, labels, skipped files, `take`, `fingerprint`); `resident()` decodes it
    into an `ArrayDataset` (block importance on a validation carve-out does).
    """

    source: Any
    positions: np.ndarray  # int64 indices into `source`
    workers: int = 0  # decoding threads (0: min(8, CPUs))
    prefetch: int = 2  # batches decoded ahead

    def __post_init__(self):
        self.positions = np.asarray(self.positions, np.int64)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_names(self):
        return self.source.class_names

    @property
    def skipped_files(self) -> tuple[str, ...]:
        return self.source.skipped_files

    @property
    def labels(self) -> np.ndarray:
        """Every example's label (read from the listing; a TFDS source reads its records)."""
        return self.source.labels[self.positions]

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.source, self.positions)
        return self._fingerprint

    def take(self, indices: np.ndarray) -> StreamedDataset:
        return dataclasses.replace(self, positions=self.positions[np.asarray(indices)])

    def resident_bytes(self) -> int:
        """What the split would take decoded, from the listing and the stored size."""
        return len(self) * self.source.pixels_per_image() * 3

    def resident(self) -> ArrayDataset:
        """Every example decoded into memory (a small split: a validation carve-out)."""
        images, labels = decode_source(self.source, self.positions, self.thread_count)
        return ArrayDataset(
            images=images,
            labels=labels,
            num_classes=self.num_classes,
            class_names=self.class_names,
            skipped_files=self.skipped_files,
            fingerprint=self.fingerprint,
        )

    @property
    def thread_count(self) -> int:
        return self.workers or default_workers()

    def example(self, position: int) -> tuple[np.ndarray, np.int32]:
        """Example `position` of the split (PADDING: a zero image, label 0)."""
        if position == PADDING:
            return np.zeros(self.source.image_shape(), np.uint8), np.int32(0)
        image, label = self.source.read(int(self.positions[position]))
        return image, np.int32(label)

    def local_batches(
        self, rows_of_step: Callable[[int], np.ndarray], start: int, stop: int
    ) -> LocalBatches:
        """(images, labels) numpy batches of steps start..stop-1, each the examples at the
        positions `rows_of_step(step)` (this process's rows), decoded ahead by threads."""
        import grain

        rows = _StepRows(rows_of_step, start, stop)
        batch = rows.per_step
        options = grain.ReadOptions(
            num_threads=self.thread_count, prefetch_buffer_size=max(1, self.prefetch) * batch
        )
        dataset = grain.MapDataset.source(rows).map(self.example)
        return LocalBatches(iter(dataset.to_iter_dataset(options).batch(batch)))


class _StepRows:
    """The flat sequence of positions a run of steps reads: step-major, then row; each step's
    rows computed once (a thread-safe cache of the last few steps)."""

    def __init__(self, rows_of_step: Callable[[int], np.ndarray], start: int, stop: int):
        self.rows_of_step, self.start = rows_of_step, start
        self.per_step = len(rows_of_step(start))
        self.length = max(0, stop - start) * self.per_step
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> int:
        if not 0 <= k < self.length:
            raise IndexError(k)
        step, row = divmod(k, self.per_step)
        step += self.start
        with self._lock:
            rows = self._cache.get(step)
            if rows is None:
                rows = self._cache[step] = np.asarray(self.rows_of_step(step))
                for old in [s for s in self._cache if s < step - 64]:
                    del self._cache[old]
        return int(rows[row])


class LocalBatches:
    """An iterator of (images, labels) numpy batches with `close()`: stops the decoding
    threads and drops the prefetched batches (called when the stage ends, however)."""

    def __init__(self, iterator: Iterator):
        self._iterator = iterator

    def __iter__(self) -> LocalBatches:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        return next(self._iterator)

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
