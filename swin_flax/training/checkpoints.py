"""Train-state checkpoints of a training stage (orbax CheckpointManager)."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax

from swin_flax import cli
from swin_flax.errors import CheckpointRestoreError

DAMAGED_DIR = "damaged_checkpoints"  # beside a stage's checkpoints: those that did not restore


TMP_MARKER = ".orbax-checkpoint-tmp"


class TrainCheckpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()
        if jax.process_index() == 0:
            remove_unfinished_saves(self.directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        import orbax.checkpoint as ocp

        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, template_state, step: int | None = None):
        """Restore into the shapes, dtypes and shardings of `template_state`."""
        import orbax.checkpoint as ocp

        step = self.latest_step() if step is None else step
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template_state
        )
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_newest_intact(self, template_state):
        """The newest checkpoint that restores, or None when there is none at all.

        Newer ones that fail are moved to DAMAGED_DIR only once an older one has restored,
        so when nothing restores the directory is left exactly as it was.
        """
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore(template_state, step)
            except Exception as err:  # any failure to read means "damaged"
                failures.append((step, _first_line(err)))
                cli.warn(
                    f"checkpoint {self.directory / str(step)} does not restore "
                    f"({failures[-1][1]}); trying the next older one"
                )
                continue
            if failures:
                self._set_aside([s for s, _ in failures])
            return state
        if failures:
            tried = "; ".join(f"step {s}: {why}" for s, why in failures)
            raise CheckpointRestoreError(
                f"no checkpoint in {self.directory} restores ({tried}). They are left in "
                "place; delete that stage directory to train the stage again from the start."
            )
        return None

    def _set_aside(self, steps: list[int]) -> None:
        target = self.directory.parent / DAMAGED_DIR
        if jax.process_index() == 0:
            target.mkdir(exist_ok=True)
            for step in steps:
                destination = _free_name(target / str(step))
                shutil.move(str(self.directory / str(step)), destination)
                cli.warn(f"moved the damaged checkpoint of step {step} to {destination}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("damaged checkpoints set aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def remove_unfinished_saves(directory: Path) -> list[Path]:
    """Delete the temporary directories of saves a killed run never finished.

    They hold a partial write of a step whose previous checkpoint is still intact, so
    nothing is lost; left alone they pile up and confuse anyone reading the directory.
    """
    removed = []
    if directory.is_dir():
        for path in directory.iterdir():
            if TMP_MARKER in path.name and path.is_dir():
                shutil.rmtree(path)
                removed.append(path)
    return removed


def _free_name(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ... when a damaged copy of that step is already kept."""
    candidate, suffix = path, 0
    while candidate.exists():
        suffix += 1
        candidate = path.with_name(f"{path.name}.{suffix}")
    return candidate


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"
