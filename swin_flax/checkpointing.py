"""Periodic, resumable train-state checkpoints with orbax's CheckpointManager.

Orbax writes each checkpoint to a temporary directory and renames it when complete,
so a run killed at any moment (kill -9 included) leaves only whole checkpoints behind;
the next run restores the newest one and continues from that step.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class TrainCheckpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, template_state, step: int | None = None):
        """Restore into the shapes, dtypes and shardings of `template_state`."""
        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template_state)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
