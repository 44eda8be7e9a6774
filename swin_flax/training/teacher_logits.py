"""Where a distillation stage's teacher logits come from: `TeacherLogitSource`, their one owner.

`distill.teacher_logits` chooses (timm's `LogitDistillationTask` owns its teacher the same way;
the step and the loop only ask this object):

    live    the frozen teacher runs inside the jitted step, on the step's augmented batch;
    record  the same, and every step's logits are written to WORKDIR/teacher_logits/
            (`swin_flax.training.logit_store`); steps already recorded are read;
    cached  a matching recording is read, the teacher does not run; steps it lacks run live;
    auto    record when several students of this run read the same logits (same seed and
            batch schedule: random+kd and transfer+kd of a seed, the rows of a sweep), read a
            matching recording if there is one, else live (`TeacherLogitSources.for_stage`).

Why a recording can stand in for the teacher: a step's teacher logits depend only on the
teacher's weights, the training images, the augmentation and the batch schedule, because
batch order and augmentation are a pure function of (seed, step) (`epoch_batches(seed,
epoch)`, `fold_in(rng, step)`), the same whether the images are resident or streamed -
and on what decides how those functions compute: JAX's PRNG implementation and its
partitionable-threefry switch, the matmul precision, the JAX, jaxlib and swin_flax
versions, the device kind and count. All of it is the recording's fingerprint (the images
by their listing, `data_hash`); a recording made under any other value is never read.

Exactness: logits are stored in the dtype the teacher produces them in ('auto': its compute
dtype), so a student trained from a recording equals one trained live bit for bit (on CPU
in float32: tests/training/test_teacher_logits.py). A narrower storage dtype rounds them;
the recording run then trains on the rounded logits too (`round_teacher_logits_to`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swin_flax.data.dataset import data_fingerprint
from swin_flax.errors import UserInputError
from swin_flax.training import optim
from swin_flax.training.logit_store import (
    FORMAT_VERSION,
    INDEX_FILE,
    STORE_DTYPES,
    LogitStore,
    recording_dir,
    store_dtype_name,
)


@dataclasses.dataclass
class TeacherLogitSource:
    """The teacher's side of one distillation stage.

    `teacher`/`params` run live; `store` (a `LogitStore`, or None) is read before the teacher
    runs and, when it records, receives every step the teacher ran.
    """

    teacher: Any
    params: Any
    store: LogitStore | None = None

    @property
    def mode(self) -> str:
        if self.store is None:
            return "live"
        return "record" if self.store.records else "cached"

    @property
    def round_to(self):
        """The dtype live logits are rounded to inside the step (None: not rounded)."""
        return STORE_DTYPES[self.store.dtype_name] if self.mode == "record" else None

    def placed(self, put_params: Callable) -> TeacherLogitSource:
        """A copy whose parameters are on the devices (`put_params`: the replicating put)."""
        return dataclasses.replace(self, params=put_params(self.params))

    def check_schedule(self, stage: str, total_steps: int, batch_size: int) -> None:
        store = self.store
        if store is not None and (store.total_steps, store.batch_size) != (total_steps, batch_size):
            raise ValueError(
                f"stage {stage!r}: the teacher logits were opened for {store.total_steps} "
                f"steps of {store.batch_size}, the stage runs {total_steps} of {batch_size}"
            )

    def step_input(self, step: int, put_batch: Callable) -> dict:
        """What the step receives: the recorded logits of `step` (placed with `put_batch`),
        or the teacher's parameters to run it."""
        stored = self.store.get(step) if self.store is not None else None
        if stored is not None:
            return {"logits": put_batch(stored)}
        return {"params": self.params}

    def after_step(self, step: int, teacher_input: dict, logits) -> None:
        """Record the logits of a step the teacher ran (when recording)."""
        if self.mode == "record" and "params" in teacher_input:
            self.store.put(step, logits)

    def flush(self) -> None:
        if self.store is not None:
            self.store.flush()

    def close(self) -> str | None:
        """Flush; the line that says how many steps were read and run (None when live)."""
        if self.store is None:
            return None
        self.store.flush()
        return self.store.summary()


def environment() -> dict:
    """What decides how the augmentation, batch order and teacher compute, besides the data."""
    import jaxlib

    from swin_flax import __version__

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "swin_flax": __version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "prng_impl": str(jax.config.jax_default_prng_impl),
        "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
    }


def fingerprint(
    *,
    teacher,
    teacher_params_hash: str,
    data_hash: str,
    augment,
    seed: int,
    batch_size: int,
    steps_per_epoch: int,
    total_steps: int,
    store_dtype: str,
) -> dict:
    """Everything a stage's teacher logits depend on."""
    from swin_flax.model.swin import model_config

    return {
        "format": FORMAT_VERSION,
        "teacher_params_sha256": teacher_params_hash,
        "teacher_architecture": model_config(teacher),
        "teacher_dtype": jnp.dtype(teacher.dtype).name,
        "data_sha256": data_hash,
        "augment": dataclasses.asdict(augment),
        "seed": seed,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "store_dtype": store_dtype,
        **environment(),
    }


def tree_hash(tree) -> str:
    """sha256 over a pytree's paths, shapes, dtypes and bytes (e.g. the teacher's params)."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    for path, leaf in leaves:
        leaf = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{leaf.shape}|{leaf.dtype}|".encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def data_hash(data) -> str:
    """What names the training set (the examples the teacher sees): its source's listing
    (relative paths, file sizes, labels, stored size, decoder version, the subset kept),
    computed alike for a resident and a streamed split and without decoding a pixel; the
    pixels' sha256 for a data set that has no listing (digits, arrays made in code)."""
    return data_fingerprint(data)


class TeacherLogitSources:
    """A run's teacher logits: which distilling stages share them, where recordings live.

    The pipeline announces every distilling stage first (`expect_reader`), then asks
    `for_stage` for each one's `TeacherLogitSource`. Stages with the same seed, batch size,
    epochs and augmentation see the same augmented batches, hence the same teacher logits.
    """

    def __init__(
        self,
        root: Path,
        *,
        teacher,
        teacher_params,
        train_data,
        num_classes: int,
        writer: bool = True,
    ):
        self.root, self.teacher, self.teacher_params = Path(root), teacher, teacher_params
        self.train_data, self.num_classes = train_data, num_classes
        self.writer = writer
        self.readers: Counter = Counter()
        self._hashes: dict[str, str] = {}

    @staticmethod
    def key(seed: int, batch_size: int, epochs: float, augment) -> tuple:
        return seed, batch_size, epochs, augment

    def expect_reader(self, seed: int, batch_size: int, epochs: float, augment) -> None:
        self.readers[self.key(seed, batch_size, epochs, augment)] += 1

    def for_stage(
        self, *, mode: str, store_dtype: str, seed: int, batch_size: int, epochs: float, augment
    ) -> TeacherLogitSource:
        live = TeacherLogitSource(self.teacher, self.teacher_params)
        if mode == "live":
            return live
        if jax.process_count() > 1:
            if mode != "auto":
                raise UserInputError(
                    f"distill.teacher_logits={mode!r} works in a single process; use 'live' "
                    "(or 'auto') with --multihost"
                )
            return live
        steps_per_epoch = len(self.train_data) // batch_size
        total = optim.steps_from_epochs(epochs, steps_per_epoch)
        directory = recording_dir(self.root, seed=seed, batch_size=batch_size, total_steps=total)
        if mode == "auto":
            if self.readers[self.key(seed, batch_size, epochs, augment)] > 1:
                mode = "record"
            elif (directory / INDEX_FILE).exists():
                mode = "cached"
            else:
                return live
        if not self._hashes:  # hashed once: one teacher and one training set per run
            self._hashes = {
                "teacher": tree_hash(self.teacher_params),
                "data": data_hash(self.train_data),
            }
        stage_fingerprint = fingerprint(
            teacher=self.teacher,
            teacher_params_hash=self._hashes["teacher"],
            data_hash=self._hashes["data"],
            augment=augment,
            seed=seed,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            store_dtype=store_dtype_name(store_dtype, self.teacher.dtype),
        )
        store = LogitStore(
            directory,
            stage_fingerprint,
            mode=mode,
            num_classes=self.num_classes,
            writer=self.writer,
        )
        return dataclasses.replace(live, store=store)
