"""The on-disk recording of a distillation stage's teacher logits (read and written by
`swin_flax.training.teacher_logits.TeacherLogitSource`, which decides when to use it).

    WORKDIR/teacher_logits/seed<S>_batch<B>_steps<T>/
        index.json                   the fingerprint, the dtype, the finished shards
        steps_<start>_<stop>.npy     (stop - start, batch, classes) logits of those steps

A recording whose fingerprint differs from the stage's is never read: it is replaced, with a
message. A shard that is damaged (unreadable, truncated, wrong shape or dtype, checksum
mismatch) is set aside with a warning and its steps run the teacher live (and, when
recording, are recorded again).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from swin_flax import cli
from swin_flax._files import DiskFullError, disk_full_error, replacing, write_json

INDEX_FILE = "index.json"
FORMAT_VERSION = 1
MAX_SHARD_BYTES = 64 << 20  # a shard is at most an epoch, and at most this many bytes
STORE_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}
# npy has no bfloat16: such shards are stored as their uint16 bit patterns.
_ON_DISK = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(np.uint16),
    "float16": np.dtype(np.float16),
}


def store_dtype_name(setting: str, teacher_dtype) -> str:
    """'auto': the teacher's compute dtype (exact); otherwise the setting."""
    if setting != "auto":
        return setting
    return {jnp.dtype(jnp.bfloat16): "bfloat16", jnp.dtype(jnp.float16): "float16"}.get(
        jnp.dtype(teacher_dtype), "float32"
    )


def recording_dir(root: Path, *, seed: int, batch_size: int, total_steps: int) -> Path:
    return Path(root) / f"seed{seed}_batch{batch_size}_steps{total_steps}"


def disk_bytes(total_steps: int, batch_size: int, num_classes: int, store_dtype: str) -> int:
    return total_steps * batch_size * num_classes * STORE_DTYPES[store_dtype].itemsize


def describe_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class LogitStore:
    """The recorded teacher logits of one (teacher, data, augmentation, seed, schedule) on disk.

    mode 'record': steps found are read, missing ones are run live and recorded;
    mode 'cached': steps found are read, missing ones are run live, nothing is written.
    `TeacherLogitSource` asks `get(step)`; when it returns None the step runs the teacher and, if
    `records`, the logits come back with `put(step, logits)`; `flush()` at checkpoints.
    """

    def __init__(
        self,
        directory: Path,
        fingerprint: dict,
        *,
        mode: str,
        num_classes: int,
        writer: bool = True,
    ):
        if mode not in ("record", "cached"):
            raise ValueError(f"cache mode must be record or cached, got {mode!r}")
        self.directory, self.fingerprint, self.mode = Path(directory), fingerprint, mode
        self.total_steps = int(fingerprint["total_steps"])
        self.batch_size = int(fingerprint["batch_size"])
        self.num_classes = num_classes
        self.dtype_name = fingerprint["store_dtype"]
        self.writer = writer and mode == "record"
        self.shard_steps = max(
            1,
            min(
                int(fingerprint["steps_per_epoch"]),
                MAX_SHARD_BYTES
                // max(1, self.batch_size * num_classes * STORE_DTYPES[self.dtype_name].itemsize),
            ),
        )
        self.shards: list[dict] = []
        self._loaded: tuple[dict, np.ndarray] | None = None
        self._buffer: list = []  # device arrays of consecutive steps from _buffer_start
        self._buffer_start = 0
        self.hits = self.misses = 0
        self._open()

    @property
    def records(self) -> bool:
        return self.writer

    @property
    def complete(self) -> bool:
        covered = sum(s["stop"] - s["start"] for s in self.shards)
        return covered >= self.total_steps

    def _open(self) -> None:
        index = self.directory / INDEX_FILE
        stored = None
        if index.exists():
            try:
                stored = json.loads(index.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                cli.warn(f"{index} is damaged; its teacher logits are not used")
        if stored is not None and stored.get("fingerprint") == json.loads(
            json.dumps(self.fingerprint)
        ):
            self.shards = list(stored.get("shards", []))
            return
        if stored is not None:
            differing = sorted(
                k
                for k in set(stored.get("fingerprint", {})) | set(self.fingerprint)
                if stored.get("fingerprint", {}).get(k) != self.fingerprint.get(k)
            )
            action = "recording them anew" if self.writer else "the teacher runs live"
            cli.note(
                f"the teacher logits in {self.directory} were recorded for other "
                f"settings ({', '.join(differing)}); not used, {action}"
            )
        elif not self.writer:
            cli.note(f"no teacher logits recorded in {self.directory}; the teacher runs live")
        if self.writer:
            if self.directory.exists():
                shutil.rmtree(self.directory)
            size = disk_bytes(self.total_steps, self.batch_size, self.num_classes, self.dtype_name)
            cli.note(
                f"recording the teacher's logits to {self.directory}: {self.total_steps} "
                f"steps x {self.batch_size} x {self.num_classes} {self.dtype_name} = "
                f"{describe_bytes(size)}"
            )
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_index()

    # --- reading -------------------------------------------------------------------------

    def get(self, step: int) -> np.ndarray | None:
        """The stored logits of `step` as (batch, classes) float32, or None."""
        shard = next((s for s in self.shards if s["start"] <= step < s["stop"]), None)
        if shard is None:
            self.misses += 1
            return None
        if self._loaded is None or self._loaded[0] is not shard:
            values = self._load(shard)
            if values is None:
                self.misses += 1
                return None
            self._loaded = (shard, values)
        self.hits += 1
        return self._loaded[1][step - shard["start"]]

    def _load(self, shard: dict) -> np.ndarray | None:
        path = self.directory / shard["file"]
        expected = (shard["stop"] - shard["start"], self.batch_size, self.num_classes)
        try:
            raw = path.read_bytes()
            problem = None
            if hashlib.sha256(raw).hexdigest() != shard["sha256"]:
                problem = "its checksum differs from the index (truncated or changed)"
            else:
                values = np.load(path, allow_pickle=False)
                if values.shape != expected or values.dtype != _ON_DISK[self.dtype_name]:
                    problem = (
                        f"it holds {values.dtype}{list(values.shape)}, expected "
                        f"{_ON_DISK[self.dtype_name]}{list(expected)}"
                    )
        except (OSError, ValueError, EOFError) as err:
            problem = f"it cannot be read ({err})"
        if problem is not None:
            cli.warn(
                f"teacher-logit shard {path} is damaged: {problem}. Its steps "
                f"{shard['start']}-{shard['stop'] - 1} run the teacher live"
                + (" and are recorded again" if self.writer else "")
            )
            self.shards.remove(shard)
            if self.writer:
                if path.exists():
                    os.replace(path, path.with_suffix(".damaged"))
                self._write_index()
            return None
        return values.view(STORE_DTYPES[self.dtype_name]).astype(np.float32)

    # --- recording -----------------------------------------------------------------------

    def put(self, step: int, logits) -> None:
        """Keep `step`'s logits (a device array); written at the next `flush`."""
        if not self.writer:
            return
        if self._buffer and step != self._buffer_start + len(self._buffer):
            self.flush()
        if not self._buffer:
            self._buffer_start = step
        self._buffer.append(logits)
        if len(self._buffer) >= self.shard_steps:
            self.flush()

    def flush(self) -> None:
        """Write the buffered steps as one shard and list it in the index (atomically)."""
        if not self._buffer:
            return
        values = np.stack([np.asarray(x) for x in jax.device_get(self._buffer)])
        start, stop = self._buffer_start, self._buffer_start + len(self._buffer)
        self._buffer = []
        values = values.astype(STORE_DTYPES[self.dtype_name]).view(_ON_DISK[self.dtype_name])
        name = f"steps_{start:07d}_{stop:07d}.npy"
        try:
            with replacing(self.directory / name) as temporary:
                np.save(temporary, values, allow_pickle=False)
        except DiskFullError:
            recorded = sum(s["stop"] - s["start"] for s in self.shards)
            raise disk_full_error(
                self.directory,
                f"recording the teacher's logits of steps {start}-{stop - 1} to {self.directory}",
                f"the {recorded} steps recorded before are kept",
            ) from None
        digest = hashlib.sha256((self.directory / name).read_bytes()).hexdigest()
        self.shards = [s for s in self.shards if s["stop"] <= start or s["start"] >= stop]
        self.shards.append({"file": name, "start": start, "stop": stop, "sha256": digest})
        self.shards.sort(key=lambda s: s["start"])
        self._write_index()

    def _write_index(self) -> None:
        index = {
            "fingerprint": self.fingerprint,
            "store_dtype": self.dtype_name,
            "batch_size": self.batch_size,
            "num_classes": self.num_classes,
            "total_steps": self.total_steps,
            "shards": self.shards,
        }
        write_json(self.directory / INDEX_FILE, index, indent=1)

    def summary(self) -> str:
        return (
            f"teacher logits: {self.hits} steps read from {self.directory}, "
            f"{self.misses} run live" + (" and recorded" if self.writer else "")
        )
