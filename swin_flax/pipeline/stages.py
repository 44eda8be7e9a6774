"""The work directory's bookkeeping: what a stage directory records about itself, so that
running the same command again resumes, reuses or refuses it; and the lock that keeps a
second run out of the workdir.

    STAGE/stage_config.json   the settings the stage started with (its StageSpec's record)
    STAGE/checkpoints/        orbax train-state checkpoints (training/loop.py)
    STAGE/final_model/        the finished model, a `load_checkpoint` directory
    STAGE/timm_model.safetensors   the same weights for timm / PyTorch (strict load)
    STAGE/stage_done.json     written last: the stage is finished
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import traverse_util

from swin_flax import cli
from swin_flax._files import write_json
from swin_flax.errors import CheckpointError, RunPreempted, UserInputError, WorkdirInUseError
from swin_flax.model.swin import SwinTransformer
from swin_flax.settings import resumable_keys
from swin_flax.training.distributed import is_main_process
from swin_flax.weights import checkpoint

FINAL_MODEL_DIR = "final_model"
TIMM_EXPORT_FILE = "timm_model.safetensors"
STAGE_CONFIG_FILE = "stage_config.json"
STAGE_DONE_FILE = "stage_done.json"
LOCK_FILE = ".lock"


class StageStopped(Exception):
    """A stage ended before its last step (loop.stop_after_steps); rerun to continue."""


def check_stage_config(stage_dir: Path, fingerprint: dict) -> None:
    """Refuse to resume or reuse a stage that was started with other settings.

    Only a stage with something to lose (a checkpoint, or finished) is protected: one that
    failed before its first checkpoint simply starts again with the new settings. The
    optimisation knobs and the data's location may change (`settings.resumable_keys`).
    Options added to swin_flax after the stage started are not compared.
    """
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored
    path = stage_dir / STAGE_CONFIG_FILE
    if not path.exists() and stage_has_progress(stage_dir):
        # Its checkpoints store no settings: reusing it would report it under the new ones.
        raise UserInputError(
            f"{stage_dir} has no {STAGE_CONFIG_FILE} but holds checkpoints or a finished "
            "model; it cannot prove which settings it was trained with, so it is not reused "
            f"or resumed. Restore its {STAGE_CONFIG_FILE}, or delete the stage directory to "
            "train the stage again."
        )
    if path.exists() and stage_has_progress(stage_dir):
        changed = sorted(_differences(_read_stage_config(path), fingerprint))
        blocking = [key for key in changed if key not in resumable_keys()]
        if blocking:
            raise UserInputError(
                f"{stage_dir} was started with different settings ({', '.join(blocking)}); "
                "resuming would mix two runs. Use another --workdir, or delete that stage "
                "directory to start it again."
            )
        if changed:
            cli.note(f"{stage_dir.name} resumes with changed {', '.join(changed)}")
    if is_main_process():
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, fingerprint)  # atomically: other processes may be reading it


def _read_stage_config(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        stored, why = None, str(err)
    else:
        why = f"it holds a {type(stored).__name__}, not the settings"
    if not isinstance(stored, dict):
        raise UserInputError(
            f"{path} is damaged ({why}); it records the settings this stage was started "
            "with. Restore it, or delete the stage directory to train the stage again."
        )
    return stored


def _differences(stored: dict, current: dict) -> list[str]:
    stored = traverse_util.flatten_dict(stored, sep=".")
    current = traverse_util.flatten_dict(current, sep=".")
    return [key for key in stored.keys() & current.keys() if stored[key] != current[key]]


def stage_is_done(stage_dir: Path) -> bool:
    return (Path(stage_dir) / STAGE_DONE_FILE).exists()


def stage_has_progress(stage_dir: Path) -> bool:
    return bool(_checkpoint_steps(stage_dir)) or stage_is_done(stage_dir)


def stage_status(stage_dir: Path, record: dict) -> str:
    """What a rerun would do with this stage directory, read without touching it: 'done',
    'resumes at step N', 'not started', or why it would be refused."""
    path = stage_dir / STAGE_CONFIG_FILE
    if stage_has_progress(stage_dir):
        if not path.exists():
            return f"refused: it has no {STAGE_CONFIG_FILE}"
        stored = json.loads(path.read_text())
        changed = _differences(stored, json.loads(json.dumps(record)))
        blocking = sorted(key for key in changed if key not in resumable_keys())
        if blocking:
            return f"refused: started with other settings ({', '.join(blocking)})"
    if stage_is_done(stage_dir):
        return "done"
    steps = _checkpoint_steps(stage_dir)
    return f"resumes at step {max(steps)}" if steps else "not started"


def _checkpoint_steps(stage_dir: Path) -> list[int]:
    checkpoints = stage_dir / "checkpoints"
    return (
        [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]
        if checkpoints.is_dir()
        else []
    )


def finished_model_available(stage_dir: Path) -> bool:
    """Whether a finished stage can be reused as is. A finished stage whose final_model/
    was deleted or damaged is trained "again": the loop restores the final checkpoint,
    runs no step, and `finish_stage` writes final_model/ anew."""
    if not stage_is_done(stage_dir):
        return False
    if checkpoint.is_checkpoint(stage_dir / FINAL_MODEL_DIR):
        return True
    cli.note(
        f"{stage_dir.name} is finished but its {FINAL_MODEL_DIR}/ is missing or "
        "incomplete; rebuilding it from the stage's newest checkpoint"
    )
    broken = stage_dir / FINAL_MODEL_DIR
    if broken.exists() and is_main_process():
        shutil.move(str(broken), str(stage_dir / f"{FINAL_MODEL_DIR}.damaged"))
    return False


def load_finished_model(stage_dir: Path, dtype):
    final = stage_dir / FINAL_MODEL_DIR
    try:
        return checkpoint.load_checkpoint(final, dtype=dtype)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}. To rebuild it, move {final} away (e.g. to {FINAL_MODEL_DIR}.damaged) and "
            "run the same command again: it is rebuilt from the stage's newest checkpoint"
        ) from None


def finish_stage(
    stage_dir: Path,
    model: SwinTransformer,
    result,
    class_names: Sequence[str] | None = None,
    stored_size: int | None = None,
) -> None:
    """Keep the finished model as a `load_checkpoint` directory and as timm .safetensors,
    then mark the stage done; or stop the run when the stage stopped early.

    final_model/ also stores the training data's `class_names` and data.stored_size
    (`stored_size`, None or 0: images kept at their size), so that export.py and predict.py
    name the classes and preprocess images as training did.

    The .safetensors file is what users deploy: timm's `SwinTransformer(**kwargs)` (kwargs
    in the file's metadata) loads it with strict=True, for PyTorch or ONNX export.
    """
    if result.stopped_by:
        raise RunPreempted(
            f"{stage_dir.name} stopped by {result.stopped_by} after step "
            f"{result.steps}; its checkpoint is saved"
        )
    if not result.completed:
        raise StageStopped(
            f"{stage_dir.name} at step {result.steps}; run the same command again to continue"
        )
    from swin_flax.weights.timm import save_timm_safetensors

    model = model.clone(dtype=jnp.float32)
    params = jax.device_get(result.params)
    # Every process joins orbax's save (it writes from the primary host only).
    checkpoint.save_checkpoint(
        stage_dir / FINAL_MODEL_DIR,
        model,
        params,
        overwrite=True,
        class_names=class_names,
        stored_size=stored_size or None,
    )
    if is_main_process():
        save_timm_safetensors(params, stage_dir / TIMM_EXPORT_FILE, model=model)
        # Written last, atomically, once everything the stage produces is on disk.
        write_json(
            stage_dir / STAGE_DONE_FILE,
            {"steps": result.steps, "final_metrics": result.final_metrics},
        )


def check_workdir_writable(workdir: Path) -> None:
    """A read-only or unwritable workdir is found now, not at the first checkpoint."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise UserInputError(
            f"cannot write to the workdir {workdir} ({err.strerror or err}); "
            "give a writable directory with --workdir"
        ) from None


@contextlib.contextmanager
def exclusive_workdir(workdir: str | Path, *, enabled: bool = True):
    """Hold WORKDIR/.lock for the duration of the block, or raise WorkdirInUseError at once.

    Two runs writing one workdir interleave checkpoints and truncate each other's metrics.
    `fcntl.flock` is released by the kernel when the holder exits, however it exits (kill -9
    included), so a crashed run never blocks the next one and there is no stale lock to
    delete by hand; the file's content (pid and host) is only for the message. Only process
    0 locks (`enabled`): the processes of one multi-host run share the workdir by design.
    """
    if not enabled:
        yield
        return
    handle = open(Path(workdir) / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid, host = (handle.read().split() + ["?", "?"])[:2]
            raise WorkdirInUseError(
                f"workdir {workdir} is in use by pid {pid} on host {host}; wait for that run "
                "to finish (or stop it), or use another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
