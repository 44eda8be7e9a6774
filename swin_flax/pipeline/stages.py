"""Stage bookkeeping: what a stage directory records about itself, so that running the same
command again resumes, reuses or refuses it.

    STAGE/stage_config.json   the settings the stage started with (its fingerprint)
    STAGE/checkpoints/        orbax train-state checkpoints (training/loop.py)
    STAGE/final_model/        the finished model, a `load_checkpoint` directory
    STAGE/timm_model.safetensors   the same weights for timm / PyTorch (strict load)
    STAGE/stage_done.json     written last: the stage is finished
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import traverse_util

from swin_flax import cli
from swin_flax._files import write_json
from swin_flax.errors import CheckpointError, RunPreempted, UserInputError
from swin_flax.model.swin import SwinTransformer
from swin_flax.settings import RunSettings, resumable_keys
from swin_flax.training.distributed import is_main_process
from swin_flax.weights import checkpoint

FINAL_MODEL_DIR = "final_model"
TIMM_EXPORT_FILE = "timm_model.safetensors"
STAGE_CONFIG_FILE = "stage_config.json"
STAGE_DONE_FILE = "stage_done.json"


class StageStopped(Exception):
    """A stage ended before its last step (loop.stop_after_steps); rerun to continue."""


def teacher_fingerprint(settings: RunSettings) -> dict:
    """Everything the fine-tuned teacher depends on."""
    return {
        "seed": settings.seed,
        "compute_dtype": settings.compute_dtype,
        "data": dataclasses.asdict(settings.data),
        "teacher": dataclasses.asdict(settings.teacher),
        "finetune": dataclasses.asdict(settings.finetune),
    }


def student_fingerprint(settings: RunSettings, variant_name: str, seed: int) -> dict:
    """Everything a student depends on: its teacher's settings and its own."""
    return {
        **teacher_fingerprint(settings),
        "student": dataclasses.asdict(settings.student),
        "distill": dataclasses.asdict(settings.distill),
        "variant": variant_name,
        "student_seed": seed,
    }


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
    checkpoints = stage_dir / "checkpoints"
    has_checkpoint = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    return has_checkpoint or stage_is_done(stage_dir)


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
    stage_dir: Path, model: SwinTransformer, result, train_data=None, data_settings=None
) -> None:
    """Keep the finished model as a `load_checkpoint` directory and as timm .safetensors,
    then mark the stage done; or stop the run when the stage stopped early.

    final_model/ also stores the class names of `train_data` and data.stored_size (from
    `data_settings`), so that export.py and predict.py name the classes and preprocess
    images as training did.

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
        class_names=None if train_data is None else train_data.class_names,
        stored_size=None if data_settings is None else data_settings.stored_size or None,
    )
    if is_main_process():
        save_timm_safetensors(params, stage_dir / TIMM_EXPORT_FILE, model=model)
        # Written last, atomically, once everything the stage produces is on disk.
        write_json(
            stage_dir / STAGE_DONE_FILE,
            {"steps": result.steps, "final_metrics": result.final_metrics},
        )
