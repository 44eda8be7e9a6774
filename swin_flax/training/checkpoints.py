"""Train-state checkpoints of a training stage (orbax CheckpointManager).

A save that finds the disk full (at once, or in orbax's background thread) is one
`DiskFullError` naming the step, the directory and the step that is kept; its partial save
is removed, so the rerun that resumes finds only finished checkpoints.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import jax

from swin_flax import cli
from swin_flax._files import disk_full_error, is_disk_full, quiet_failed_save_reports
from swin_flax.errors import CheckpointRestoreError
from swin_flax.training.preemption import pending_signal

DAMAGED_DIR = "damaged_checkpoints"  # beside a stage's checkpoints: those that did not restore


TMP_MARKER = ".orbax-checkpoint-tmp"


def _checkpoint_manager_class():
    import orbax.checkpoint as ocp

    class CheckpointManager(ocp.CheckpointManager):
        """orbax's manager, minus its calls to JAX's preemption sync point.

        `multihost_utils.reached_preemption_sync_point(id)` needs one increasing id per
        process: the coordination service sets the stop at the largest id last reported + 1.
        orbax's save (and its finalisation) report the stage's step, which starts again at 0
        in every stage, while training/preemption.py reports its own count of calls; a
        notice arriving right after a save in a later stage then set the stop at an id the
        count had passed long ago, and no process ever stopped. preemption.stop_requested()
        is the one caller; here orbax only learns whether a stop is under way (it logs it;
        every save of ours is forced, so nothing else depends on it).
        """

        def reached_preemption(self, step: int) -> bool:
            del step
            return pending_signal() is not None

    return CheckpointManager


class TrainCheckpointer:
    def __init__(self, directory: str | Path, *, keep: int = 3):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()
        quiet_failed_save_reports()
        if jax.process_index() == 0:
            remove_unfinished_saves(self.directory)
        self.manager = _checkpoint_manager_class()(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self._saving: int | None = None  # the step whose (asynchronous) save may be running
        self._failed = False  # a save found the disk full: that error is the one to report

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        import orbax.checkpoint as ocp

        self._wait_for_save()  # a failure of the previous save is reported as that step's
        self._saving = step
        with self._stop_when_disk_full(step):
            self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def _wait_for_save(self) -> None:
        if self._saving is not None:
            with self._stop_when_disk_full(self._saving):
                self.manager.wait_until_finished()
            self._saving = None

    @contextlib.contextmanager
    def _stop_when_disk_full(self, step: int):
        """A full disk while saving `step`: remove the partial save, name what is kept."""
        try:
            yield
        except Exception as err:
            if not is_disk_full(err):
                raise
            self._failed = True
            with contextlib.suppress(Exception):  # let orbax's threads end before the cleanup
                self.manager.wait_until_finished()
            if jax.process_index() == 0:
                remove_unfinished_saves(self.directory, missing_ok=True)
            kept = [s for s in finished_steps(self.directory) if s != step]
            raise disk_full_error(
                self.directory,
                f"saving step {step} to {self.directory}",
                f"the checkpoint of step {max(kept)} is kept"
                if kept
                else "no earlier checkpoint of this stage is kept",
            ) from None

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
        if self._failed:  # the save's DiskFullError is on its way up; orbax would repeat it
            with contextlib.suppress(Exception):
                self.manager.close()
            return
        self._wait_for_save()
        self.manager.close()


def finished_steps(directory: Path) -> list[int]:
    """The steps whose checkpoints are complete (orbax renames a save into place last)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def remove_unfinished_saves(directory: Path, *, missing_ok: bool = False) -> list[Path]:
    """Delete the temporary directories of saves a killed run (or a full disk) never
    finished.

    They hold a partial write of a step whose previous checkpoint is still intact, so
    nothing is lost; left alone they pile up and confuse anyone reading the directory.
    `missing_ok`: files that vanish meanwhile (orbax cleaning up too) are no error.
    """
    removed = []
    if directory.is_dir():
        for path in directory.iterdir():
            if TMP_MARKER in path.name and path.is_dir():
                shutil.rmtree(path, ignore_errors=missing_ok)
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
