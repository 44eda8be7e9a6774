"""Orbax checkpoints: a model with its parameters, and a training run's train states.

Model checkpoints (`save_checkpoint`, `load_checkpoint`): one directory has two items: 'params' (the parameter pytree, `StandardSave`) and
'model_config' (the architecture, `JsonSave` of `model_config(model)`), and optionally a
third, 'class_names' (`JsonSave` of a list: the classifier's label names, e.g. from a
transformers config.json). Any orbax user can read it; `load_checkpoint(path)` is all
swin_flax users need:

    model, params = swin_flax.load_checkpoint("swin_t_in1k")
    logits = model.apply({"params": params}, images_nhwc)

Train-state checkpoints (`TrainCheckpointer`): periodic and resumable, with orbax's
CheckpointManager. Orbax writes each checkpoint to a temporary directory and renames it
when complete, so a run killed at any moment (kill -9 included) leaves only whole
checkpoints behind; the next run restores the newest one and continues from that step.
What a kill does leave is the temporary directory, removed on the next start.
Whole is not the same as intact: a disk that fills up, a copy cut short or a file damaged
later gives a checkpoint that does not restore. Then the next older one is used, and the
damaged one is moved aside (never deleted) with a warning that names it.

Orbax is imported inside the functions, so `import swin_flax` stays light.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from swin_flax.errors import CheckpointError, CheckpointRestoreError
from swin_flax.model import (
    CONFIG_FIELDS, SwinTransformer, abstract_params, model_config, model_from_config,
)

PARAMS_ITEM = "params"
CONFIG_ITEM = "model_config"
CLASS_NAMES_ITEM = "class_names"
DAMAGED_DIR = "damaged_checkpoints"  # beside a stage's checkpoints: those that did not restore
TMP_MARKER = ".orbax-checkpoint-tmp"


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.fspath(path)).expanduser().absolute()  # orbax wants absolute paths


def is_checkpoint(path: str | os.PathLike) -> bool:
    path = _absolute(path)
    return (path / PARAMS_ITEM).is_dir() and (path / CONFIG_ITEM).is_dir()


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise unless `path` is free, or (with overwrite) an empty dir or a checkpoint.

    Overwriting never deletes a directory that holds anything else.
    """
    path = _absolute(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise CheckpointError(f"{path} exists and is not a directory")
    if not overwrite and any(path.iterdir()):
        raise CheckpointError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) "
                              "to replace it")
    if overwrite and any(path.iterdir()) and not is_checkpoint(path):
        raise CheckpointError(
            f"{path} is not empty and is not a swin_flax checkpoint; refusing to overwrite it")


def _shape_problems(params, abstract) -> list[str]:
    have = traverse_util.flatten_dict(params, sep="/")
    want = traverse_util.flatten_dict(abstract, sep="/")
    problems = [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [f"{k}: {tuple(np.shape(have[k]))} vs model {tuple(want[k].shape)}"
                 for k in want if k in have and tuple(np.shape(have[k])) != tuple(want[k].shape)]
    return problems


def checkpoint_args(model: SwinTransformer, params, class_names=None):
    """`ocp.args.Composite` saving `params` and the model configuration (for managers too),
    and the class names if given."""
    import orbax.checkpoint as ocp

    items = {
        PARAMS_ITEM: ocp.args.StandardSave(params),
        CONFIG_ITEM: ocp.args.JsonSave(model_config(model)),
    }
    if class_names is not None:
        items[CLASS_NAMES_ITEM] = ocp.args.JsonSave([str(name) for name in class_names])
    return ocp.args.Composite(**items)


def save_checkpoint(path: str | os.PathLike, model: SwinTransformer, params, *,
                    overwrite: bool = False, class_names=None) -> Path:
    """Write `params` and `model_config(model)` to the orbax checkpoint directory `path`,
    and `class_names` (one per output of the classifier) if given."""
    import orbax.checkpoint as ocp

    path = _absolute(path)
    if set(params) == {"params"}:
        params = params["params"]
    problems = _shape_problems(params, abstract_params(model))
    if class_names is not None and len(class_names) != model.num_classes:
        problems.append(f"{len(class_names)} class names for {model.num_classes} classes")
    if problems:
        raise CheckpointError("params do not match the model:\n  " + "\n  ".join(problems))
    check_writable(path, overwrite=overwrite)
    # check_writable allowed it: an empty directory or an old checkpoint may be replaced.
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=checkpoint_args(model, params, class_names),
                          force=path.exists())
    return path


def load_class_names(path: str | os.PathLike) -> list[str] | None:
    """The class names stored with a checkpoint; None when it has none (most do not)."""
    import orbax.checkpoint as ocp

    path = _require_checkpoint(path)
    if not (path / CLASS_NAMES_ITEM).is_dir():
        return None
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            path, args=ocp.args.Composite(**{CLASS_NAMES_ITEM: ocp.args.JsonRestore()}))
    return list(restored[CLASS_NAMES_ITEM])


def load_model_config(path: str | os.PathLike) -> dict:
    """The stored architecture (the 'model_config' item) of a checkpoint."""
    import orbax.checkpoint as ocp

    path = _require_checkpoint(path)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            path, args=ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))
    return dict(restored[CONFIG_ITEM])


def load_checkpoint(path: str | os.PathLike, **overrides) -> tuple[SwinTransformer, dict]:
    """`(model, params)` from a checkpoint directory; overrides change model fields.

    Overrides that keep the parameter shapes are allowed (dtype=jnp.bfloat16 for bf16
    compute with float32 parameters, drop_path_rate, ...). Parameters are placed on the
    default device.
    """
    import orbax.checkpoint as ocp

    path = _require_checkpoint(path)
    config = load_model_config(path)
    try:
        stored = model_from_config(config)
        model = model_from_config(config, **overrides) if overrides else stored
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build the model stored in {path}: {e}") from None

    abstract = abstract_params(stored)
    # A device of this process: on several hosts jax.devices()[0] belongs to process 0.
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            path, args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardRestore(abstract)}))
    params = restored[PARAMS_ITEM]

    if set(overrides) & (set(CONFIG_FIELDS) - {"drop_rate", "attn_drop_rate", "drop_path_rate"}):
        problems = _shape_problems(params, abstract_params(model))
        if problems:
            raise CheckpointError(
                f"the overrides {overrides} change the parameter shapes of the checkpoint "
                f"in {path} ({problems[0]}{', ...' if len(problems) > 1 else ''}); build the "
                "new model and convert or transfer the weights instead")
    return model, params


def _require_checkpoint(path: str | os.PathLike) -> Path:
    path = _absolute(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not is_checkpoint(path):
        raise CheckpointError(
            f"{path} is not a swin_flax checkpoint: expected an orbax checkpoint directory "
            f"with the items '{PARAMS_ITEM}' and '{CONFIG_ITEM}' (written by "
            "convert_timm_weights.py or swin_flax.save_checkpoint)")
    return path


# --------------------------------------------------------------------------------------
# Train-state checkpoints of a training stage.

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
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template_state)
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
            except Exception as err:  # noqa: BLE001: any failure to read means "damaged"
                failures.append((step, _first_line(err)))
                print(f"warning: checkpoint {self.directory / str(step)} does not restore "
                      f"({failures[-1][1]}); trying the next older one", file=sys.stderr,
                      flush=True)
                continue
            if failures:
                self._set_aside([s for s, _ in failures])
            return state
        if failures:
            tried = "; ".join(f"step {s}: {why}" for s, why in failures)
            raise CheckpointRestoreError(
                f"no checkpoint in {self.directory} restores ({tried}). They are left in "
                "place; delete that stage directory to train the stage again from the start.")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        target = self.directory.parent / DAMAGED_DIR
        if jax.process_index() == 0:
            target.mkdir(exist_ok=True)
            for step in steps:
                destination = _free_name(target / str(step))
                shutil.move(str(self.directory / str(step)), destination)
                print(f"warning: moved the damaged checkpoint of step {step} to {destination}",
                      file=sys.stderr, flush=True)
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


__all__ = [
    "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model_config",
    "load_class_names", "checkpoint_args", "check_writable", "is_checkpoint", "PARAMS_ITEM",
    "CONFIG_ITEM", "CLASS_NAMES_ITEM", "TrainCheckpointer", "CheckpointRestoreError",
    "DAMAGED_DIR", "remove_unfinished_saves",
]
