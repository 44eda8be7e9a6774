"""Model checkpoints: a model with its parameters, as one orbax directory.

`save_checkpoint` / `load_checkpoint`: one directory has two items, 'params' (the parameter
pytree, `StandardSave`) and 'model_config' (the architecture, `JsonSave` of
`model_config(model)`), and optionally 'class_names' (`JsonSave` of a list: the classifier's
label names, from the training data or a transformers config.json) and 'preprocessing'
(`JsonSave` of {"stored_size": N}: training resized every image to N x N when it loaded
the data, before the on-device resize to the model's img_size, so deployment does the same;
`load_preprocessing`). Any orbax user can read it;
`load_checkpoint(path)` is all swin_flax users need:

    model, params = swin_flax.load_checkpoint("swin_t_in1k")
    logits = model.apply({"params": params}, images_nhwc)

A training run's periodic train-state checkpoints are `swin_flax.training.checkpoints`.

Orbax is imported inside the functions, so `import swin_flax` stays light.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from swin_flax._files import (
    quiet_failed_restore_reports,
    quiet_failed_save_reports,
    stop_when_disk_full,
)
from swin_flax.errors import CheckpointError
from swin_flax.model.config import CONFIG_FIELDS
from swin_flax.model.swin import SwinTransformer, abstract_params, model_config, model_from_config

PARAMS_ITEM = "params"
CONFIG_ITEM = "model_config"
CLASS_NAMES_ITEM = "class_names"
PREPROCESSING_ITEM = "preprocessing"


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
        raise CheckpointError(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    if overwrite and any(path.iterdir()) and not is_checkpoint(path):
        raise CheckpointError(
            f"{path} is not empty and is not a swin_flax checkpoint; refusing to overwrite it"
        )


def _shape_problems(params, abstract) -> list[str]:
    have = traverse_util.flatten_dict(params, sep="/")
    want = traverse_util.flatten_dict(abstract, sep="/")
    problems = [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [
        f"{k}: {tuple(np.shape(have[k]))} vs model {tuple(want[k].shape)}"
        for k in want
        if k in have and tuple(np.shape(have[k])) != tuple(want[k].shape)
    ]
    return problems


def checkpoint_args(model: SwinTransformer, params, class_names=None, stored_size=None):
    """`ocp.args.Composite` saving `params` and the model configuration (for managers too),
    and the class names and the stored size if given."""
    import orbax.checkpoint as ocp

    items = {
        PARAMS_ITEM: ocp.args.StandardSave(params),
        CONFIG_ITEM: ocp.args.JsonSave(model_config(model)),
    }
    if class_names is not None:
        items[CLASS_NAMES_ITEM] = ocp.args.JsonSave([str(name) for name in class_names])
    if stored_size is not None:
        items[PREPROCESSING_ITEM] = ocp.args.JsonSave({"stored_size": int(stored_size)})
    return ocp.args.Composite(**items)


def save_checkpoint(
    path: str | os.PathLike,
    model: SwinTransformer,
    params,
    *,
    overwrite: bool = False,
    class_names=None,
    stored_size: int | None = None,
) -> Path:
    """Write `params` and `model_config(model)` to the orbax checkpoint directory `path`,
    and `class_names` (one per output of the classifier) and `stored_size` (the side
    training resized its images to when loading them; None: kept as stored) if given."""
    import orbax.checkpoint as ocp

    path = _absolute(path)
    if set(params) == {"params"}:
        params = params["params"]
    problems = _shape_problems(params, abstract_params(model))
    if class_names is not None and len(class_names) != model.num_classes:
        problems.append(f"{len(class_names)} class names for {model.num_classes} classes")
    if stored_size is not None and (isinstance(stored_size, bool) or int(stored_size) < 1):
        problems.append(f"stored_size must be a side in pixels or None, got {stored_size!r}")
    if problems:
        raise CheckpointError("params do not match the model:\n  " + "\n  ".join(problems))
    check_writable(path, overwrite=overwrite)
    quiet_failed_save_reports()
    # check_writable allowed it: an empty directory or an old checkpoint may be replaced.
    with stop_when_disk_full(path, f"saving the model to {path}", "its partial save is removed"):
        try:
            with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
                checkpointer.save(
                    path,
                    args=checkpoint_args(model, params, class_names, stored_size),
                    force=path.exists(),
                )
        except BaseException:
            _remove_partial_saves(path)
            raise
    return path


def _remove_partial_saves(path: Path) -> None:
    """What a failed orbax save leaves beside `path`: its temporary directory."""
    for partial in path.parent.glob(f"{path.name}.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)


def load_class_names(path: str | os.PathLike) -> list[str] | None:
    """The class names stored with a checkpoint; None when it has none (most do not)."""
    import orbax.checkpoint as ocp

    path = _require_checkpoint(path)
    if not (path / CLASS_NAMES_ITEM).is_dir():
        return None
    names = _restore(path, CLASS_NAMES_ITEM, ocp.args.JsonRestore())
    if not isinstance(names, list):
        raise _damaged(path, f"its '{CLASS_NAMES_ITEM}' item is not a list of names")
    return names


def load_preprocessing(path: str | os.PathLike) -> dict:
    """How training preprocessed the images, as far as deployment must repeat it:
    {"stored_size": N or None}. None when the checkpoint does not say (converted weights,
    checkpoints written before it was stored): images then go straight to img_size."""
    import orbax.checkpoint as ocp

    path = _require_checkpoint(path)
    if not (path / PREPROCESSING_ITEM).is_dir():
        return {"stored_size": None}
    stored = _restore(path, PREPROCESSING_ITEM, ocp.args.JsonRestore())
    size = stored.get("stored_size") if isinstance(stored, dict) else "no dict"
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise _damaged(path, f"its '{PREPROCESSING_ITEM}' item holds stored_size {size!r}")
    return {"stored_size": size}


def load_model_config(path: str | os.PathLike) -> dict:
    """The stored architecture (the 'model_config' item) of a checkpoint."""
    import orbax.checkpoint as ocp

    path = _require_checkpoint(path)
    config = _restore(path, CONFIG_ITEM, ocp.args.JsonRestore())
    if not isinstance(config, dict):
        raise _damaged(path, f"its '{CONFIG_ITEM}' item is not a model configuration")
    return config


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
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract
    )
    params = _restore(path, PARAMS_ITEM, ocp.args.StandardRestore(abstract))

    if set(overrides) & (set(CONFIG_FIELDS) - {"drop_rate", "attn_drop_rate", "drop_path_rate"}):
        problems = _shape_problems(params, abstract_params(model))
        if problems:
            raise CheckpointError(
                f"the overrides {overrides} change the parameter shapes of the checkpoint "
                f"in {path} ({problems[0]}{', ...' if len(problems) > 1 else ''}); build the "
                "new model and convert or transfer the weights instead"
            )
    return model, params


def _restore(path: Path, item: str, args):
    """One item of the checkpoint in `path`; any failure to read it is one CheckpointError.

    orbax and tensorstore raise plain Exceptions, ValueErrors and OSErrors for a file cut
    short, changed or missing: every one means the same to the user, a damaged directory.
    """
    import orbax.checkpoint as ocp

    # Before, not after, the restore: a failed read can report itself while orbax is still
    # unwinding, before the except clause below runs.
    quiet_failed_restore_reports(path)
    try:
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
            restored = checkpointer.restore(path, args=ocp.args.Composite(**{item: args}))
        return restored[item]
    except Exception as err:  # noqa: BLE001 (whatever orbax raises: the reason is in the text)
        raise _damaged(
            path, f"its '{item}' item does not restore: {_innermost_reason(err)}"
        ) from None


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"the checkpoint {path} is damaged ({why}); write it again (convert_timm_weights.py, "
        "or the run that made it) or restore it from a copy"
    )


def _innermost_reason(err: BaseException) -> str:
    """The first line of the innermost error `err` was raised from: tensorstore's reason
    (OUT_OF_RANGE: ... of size 100), not orbax's wrapper around it."""
    seen = set()
    while (err.__cause__ or err.__context__) is not None and id(err) not in seen:
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def _require_checkpoint(path: str | os.PathLike) -> Path:
    path = _absolute(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not is_checkpoint(path):
        raise CheckpointError(
            f"{path} is not a swin_flax checkpoint: expected an orbax checkpoint directory "
            f"with the items '{PARAMS_ITEM}' and '{CONFIG_ITEM}' (written by "
            "convert_timm_weights.py or swin_flax.save_checkpoint)"
        )
    return path


# --------------------------------------------------------------------------------------
# Train-state checkpoints of a training stage.


__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_config",
    "load_class_names",
    "load_preprocessing",
    "checkpoint_args",
    "check_writable",
    "is_checkpoint",
    "PARAMS_ITEM",
    "CONFIG_ITEM",
    "CLASS_NAMES_ITEM",
    "PREPROCESSING_ITEM",
]
