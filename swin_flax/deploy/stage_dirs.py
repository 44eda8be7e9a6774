"""A training stage's directory given where a model is expected (export.py, predict.py,
the deployment report): its finished model is used, an unfinished one is named as such.

A stage of train.py (`swin_flax.pipeline.stages`) is laid out as

    STAGE/stage_config.json   STAGE/checkpoints/<step>/   STAGE/final_model/   STAGE/stage_done.json

and only final_model/ is a model checkpoint. `model_directory(path)` accepts the stage
directory of a finished stage (its final_model/ is used, with a note) and refuses, in one
line that says to rerun train.py, a stage that has not finished: the stage directory, its
checkpoints/ or one of them, or its final_model/ before it exists. Anything else is
returned as given, for `load_checkpoint` to accept or refuse.
"""

from __future__ import annotations

import os
from pathlib import Path

from swin_flax import cli
from swin_flax.errors import CheckpointError
from swin_flax.weights.checkpoint import is_checkpoint

# The stage layout's names, as `swin_flax.pipeline.stages` and `swin_flax.training.loop`
# write them (deploy may not import them; tests/deploy/test_stage_dirs.py checks they agree).
FINAL_MODEL_DIR = "final_model"
CHECKPOINTS_DIR = "checkpoints"
STAGE_CONFIG_FILE = "stage_config.json"
STAGE_DONE_FILE = "stage_done.json"


def _is_stage(path: Path) -> bool:
    return any(
        (path / name).exists()
        for name in (STAGE_CONFIG_FILE, STAGE_DONE_FILE, CHECKPOINTS_DIR, FINAL_MODEL_DIR)
    )


def _steps(checkpoints: Path) -> list[int]:
    if not checkpoints.is_dir():
        return []
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.is_dir() and p.name.isdigit())


def _stage_of(path: Path) -> Path | None:
    """The stage directory that `path` is, or lies in (checkpoints/, checkpoints/<step>/,
    final_model/); None when it is no part of a stage."""
    candidates = [path]
    if path.name in (CHECKPOINTS_DIR, FINAL_MODEL_DIR):
        candidates.append(path.parent)
    if path.name.isdigit() and path.parent.name == CHECKPOINTS_DIR:
        candidates.append(path.parent.parent)
    return next((c for c in candidates if _is_stage(c)), None)


def model_directory(path: str | os.PathLike) -> Path:
    """The model checkpoint directory `path` stands for (see the module docstring)."""
    path = Path(os.fspath(path))
    if is_checkpoint(path):
        return path
    stage = _stage_of(path)
    if stage is None:
        return path
    final = stage / FINAL_MODEL_DIR
    if is_checkpoint(final):
        if path != final:
            cli.note(f"{path} is part of a training stage; using its finished model {final}")
        return final
    if (stage / STAGE_DONE_FILE).is_file():
        raise CheckpointError(
            f"the training stage {stage} is finished but its {FINAL_MODEL_DIR}/ is missing or "
            "incomplete; rerun train.py with the same --config and --workdir: it rebuilds "
            f"{final} from the stage's newest checkpoint"
        )
    steps = _steps(stage / CHECKPOINTS_DIR)
    progress = (
        f"its newest train-state checkpoint is step {steps[-1]}"
        if steps
        else "it has no checkpoint yet"
    )
    raise CheckpointError(
        f"the training stage {stage} has not finished: it has no {FINAL_MODEL_DIR}/ ({progress}; "
        "train-state checkpoints are not models to deploy). Rerun train.py with the same "
        f"--config and --workdir to finish it, then give {final}"
    )
