"""One training stage (fine-tune, distill or a baseline): the host loop around the jitted step.

The loop is resumable by construction: the batch order of an epoch is a function of
(seed, epoch), the step's randomness is `fold_in(seed key, step)`, and the train state
is checkpointed by orbax. Re-running an interrupted stage restores the newest checkpoint
and replays exactly the steps an uninterrupted run would have taken, whether the data is
resident or streamed (`swin_flax.data.feed`; a streamed pipeline starts at the resumed
step). The stage keeps its training data's fingerprint in data.json: a resume on data that
changed says so. A batch that cannot be read (a file damaged mid-run, a failed decoding
thread) saves the steps before it and ends in one error line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from swin_flax import cli
from swin_flax._files import write_json
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.dataset import ArrayDataset, data_fingerprint
from swin_flax.data.feed import DataFeed
from swin_flax.data.stream import StreamedDataset
from swin_flax.errors import DataLoaderError, TrainingDivergedError, UserInputError
from swin_flax.model.exits import MultiExitSwin
from swin_flax.model.swin import SwinTransformer
from swin_flax.settings import LoopSettings, LossSettings, OptimSettings
from swin_flax.training import losses, optim, preemption
from swin_flax.training.checkpoints import TrainCheckpointer
from swin_flax.training.distributed import (
    batch_sharded,
    check_batch_size,
    is_main_process,
    make_mesh,
    put_global,
    put_replicated,
    replicated,
)
from swin_flax.training.metrics import MetricsWriter, ProgressBar
from swin_flax.training.multi_exit import make_multi_exit_step
from swin_flax.training.step import (
    FEATURE_PROJECTIONS,
    create_train_state,
    make_train_step,
    model_params,
)
from swin_flax.training.teacher_logits import TeacherLogitSource


@dataclasses.dataclass
class StageResult:
    params: Any
    steps: int
    completed: bool
    final_metrics: dict
    stopped_by: str | None = None  # the signal that stopped it early, checkpoint saved


def train_stage(
    *,
    name: str,
    stage_dir: str | Path,
    model: SwinTransformer,
    init_params,
    train_data: ArrayDataset | StreamedDataset,
    optim_settings: OptimSettings,
    loss_settings: LossSettings,
    augment: AugmentConfig,
    loop_settings: LoopSettings,
    seed: int,
    teacher: SwinTransformer | None = None,
    teacher_params=None,
    teacher_logits: TeacherLogitSource | None = None,
    mesh=None,
    evaluate: Callable[[Any], float] | None = None,
    evaluate_every_epochs: float = 0.0,
    feature_weights: tuple[float, ...] = (),
    exits: tuple = (),
    full_path_smoothing: float = 0.0,
) -> StageResult:
    """Train `model` from `init_params` (or from the newest checkpoint in stage_dir).

    With `evaluate` (params -> top-1 fraction) and `evaluate_every_epochs` > 0, the test
    accuracy is logged as `eval_top1` (percent) at that interval and at the last step: the
    learning curve. It reads the parameters only, so resumed runs stay bit-identical.

    A distilling stage gets its teacher as `teacher_logits` (a `TeacherLogitSource`: live, or
    reading and writing a recording) or, for a live teacher, as `teacher` + `teacher_params`.
    `feature_weights` (one per stage) add stage-feature distillation: the teacher runs live,
    learned projections where widths differ train beside the student and are not kept.
    `exits` (keep lists of `model`'s blocks) train `model` as a multi-exit Swin instead
    (training/multi_exit.py): its full path on the labels (`full_path_smoothing`), each exit
    with `loss_settings` against the full path; no teacher.
    """
    stage_dir = Path(stage_dir)
    mesh = mesh if mesh is not None else make_mesh()
    batch_size = optim_settings.batch_size
    check_batch_size(batch_size, mesh)
    steps_per_epoch = len(train_data) // batch_size
    if steps_per_epoch == 0:
        raise UserInputError(
            f"stage {name!r}: batch_size {batch_size} is larger than the training set "
            f"({len(train_data)} examples); lower the batch size"
        )
    if teacher_logits is None and teacher is not None:
        teacher_logits = TeacherLogitSource(teacher, teacher_params)
    if losses.uses_features(feature_weights):
        init_params = with_feature_projections(
            init_params, model, teacher_logits, feature_weights, seed
        )
    total_steps = optim.steps_from_epochs(optim_settings.epochs, steps_per_epoch)
    warmup_steps = min(
        optim.steps_from_epochs(optim_settings.warmup_epochs, steps_per_epoch), total_steps
    )
    tx, schedule = optim.make_optimizer(
        peak_lr=optim_settings.peak_lr,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        weight_decay=optim_settings.weight_decay,
        grad_clip_norm=optim_settings.grad_clip_norm or None,
        end_lr=optim_settings.end_lr,
        lr_scales=(
            optim.layer_lr_scales(init_params, optim_settings.layer_decay)
            if optim_settings.layer_decay < 1
            else None
        ),
    )
    keeps_ema = optim_settings.ema_decay > 0
    state = create_train_state(put_replicated(init_params, mesh), tx, ema=keeps_ema)
    state = jax.tree_util.tree_map(lambda x: jax.device_put(x, replicated(mesh)), state)
    checkpointer = TrainCheckpointer(stage_dir / "checkpoints", keep=loop_settings.keep_checkpoints)
    state = checkpointer.restore_newest_intact(state) or state
    start_step = int(jax.device_get(state.step))

    if teacher_logits is not None and not loss_settings.uses_teacher:
        if teacher_logits.store is not None:
            raise ValueError(f"stage {name!r}: recorded teacher logits need a distillation loss")
        teacher_logits = None  # labels alone: the teacher has nothing to do
    if teacher_logits is not None:
        teacher_logits.check_schedule(name, total_steps, batch_size)
        teacher_logits = teacher_logits.placed(lambda p: put_replicated(p, mesh))
    if exits:
        step_fn = make_multi_exit_step(
            model=MultiExitSwin(model.config, exits, dtype=model.dtype, attention=model.attention),
            tx=tx,
            schedule=schedule,
            full_path_smoothing=full_path_smoothing,
            exit_loss=loss_settings,
            total_steps=total_steps,
            augment=augment,
            mesh=mesh,
            ema_decay=optim_settings.ema_decay,
        )
    else:
        step_fn = make_train_step(
            student=model,
            teacher=teacher_logits.teacher if teacher_logits is not None else None,
            tx=tx,
            schedule=schedule,
            loss_settings=loss_settings,
            total_steps=total_steps,
            augment=augment,
            mesh=mesh,
            round_teacher_logits_to=teacher_logits.round_to if teacher_logits is not None else None,
            ema_decay=optim_settings.ema_decay,
            feature_weights=feature_weights,
        )
    check_data_unchanged(stage_dir, name, train_data, start_step)
    base_rng = put_replicated(jax.random.PRNGKey(seed), mesh)
    index_sharding = batch_sharded(mesh)

    writer = MetricsWriter(stage_dir, resume_step=start_step)
    progress = ProgressBar(
        name,
        total_steps,
        start_step,
        steps_per_epoch,
        batch_size,
        enabled=loop_settings.progress_bar,
    )
    pending: list[dict] = []
    # A run resumed at its final checkpoint runs no step: report what was logged there.
    last_metrics: dict = {k: v for k, v in writer.last_logged.items() if k != "epoch"}
    # loop.stop_after_steps > 0 simulates an interruption (tests, debugging).
    stop_at = min(total_steps, loop_settings.stop_after_steps or total_steps)
    eval_every = (
        max(1, round(evaluate_every_epochs * steps_per_epoch))
        if evaluate is not None and evaluate_every_epochs > 0
        else 0
    )
    feed = DataFeed(train_data, sharding=index_sharding, replicated=replicated(mesh))
    batches = feed.train(seed=seed, batch_size=batch_size, start_step=start_step, stop_step=stop_at)
    stopped_by = None
    try:
        for step in range(start_step, stop_at):
            try:
                images, labels = next(batches)
            except Exception as err:  # noqa: BLE001 (every failure of the input is one line)
                if pending:
                    writer.write(
                        step,
                        {
                            **_drain(pending, name, step, checkpointer),
                            "epoch": step / steps_per_epoch,
                        },
                    )
                saved = _save_before_failure(step, state, checkpointer, writer, teacher_logits)
                raise data_failure(err, name, step, saved) from err
            teacher_input = (
                teacher_logits.step_input(step, lambda x: put_global(x, index_sharding))
                if teacher_logits is not None
                else None
            )
            state, metrics, logits = step_fn(state, teacher_input, images, labels, base_rng)
            if teacher_logits is not None:
                teacher_logits.after_step(step, teacher_input, logits)
            pending.append(metrics)
            done = step + 1
            # A SIGTERM/SIGINT since the last step: save now, so the stop loses no step.
            stopping = preemption.stop_requested()
            checkpoint_now = (
                done % loop_settings.checkpoint_every_steps == 0 or done == total_steps or stopping
            )
            if checkpoint_now or done % loop_settings.log_every_steps == 0 or done == stop_at:
                last_metrics = _drain(pending, name, done, checkpointer)
                writer.write(done, {**last_metrics, "epoch": done / steps_per_epoch})
                progress.update(done, last_metrics)
            if eval_every and (done % eval_every == 0 or done == total_steps):
                writer.write(
                    done,
                    {
                        "eval_top1": 100.0 * evaluate(kept(state)),
                        "epoch": done / steps_per_epoch,
                    },
                )
            if checkpoint_now:
                writer.flush()
                if teacher_logits is not None:
                    teacher_logits.flush()
                checkpointer.save(done, state)
            if stopping:
                stopped_by = preemption.pending_signal()
                break
    finally:
        batches.close()
        summary = teacher_logits.close() if teacher_logits is not None else None
        if summary:
            print(summary, flush=True)
        progress.close()
        writer.close()
        checkpointer.close()

    end_step = int(jax.device_get(state.step))
    completed = end_step >= total_steps
    return StageResult(
        params=kept(state),
        steps=end_step,
        completed=completed,
        final_metrics=last_metrics,
        stopped_by=stopped_by,
    )


def _save_before_failure(step: int, state, checkpointer, writer, teacher_logits) -> str:
    """The steps done before a batch failed to arrive, saved (none lost); says what is kept.

    With several processes only the one whose share failed is here: a save (a collective
    write) would wait for the others forever, so the last periodic checkpoint is what stays.
    """
    writer.flush()
    if teacher_logits is not None:
        teacher_logits.flush()
    last = checkpointer.latest_step()
    if step > 0 and last != step and jax.process_count() == 1:
        checkpointer.save(step, state)
        last = step
    if last is None:
        return "no checkpoint was written yet"
    if last == step:
        return f"the {step} steps before it are saved in {checkpointer.directory}"
    return f"the checkpoint of step {last} is kept in {checkpointer.directory}"


def data_failure(err: Exception, stage: str, step: int, saved: str) -> Exception:
    """One line for a batch that could not be read: what failed, what is saved, what next."""
    what = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if not isinstance(err, UserInputError):
        what = f"the data loader failed ({type(err).__name__}: {what})"
    message = (
        f"stage {stage!r}: the batch of step {step + 1} could not be read: {what}; {saved}. "
        "Fix the data, then run the same command again to resume"
    )
    return UserInputError(message) if isinstance(err, UserInputError) else DataLoaderError(message)


DATA_FILE = "data.json"


def check_data_unchanged(stage_dir: Path, stage: str, data, start_step: int) -> None:
    """Keep the training data's fingerprint (its listing, or its pixels) beside the stage;
    a stage resumed on other data says so (the batches from then on differ from an
    uninterrupted run's), once."""
    path = Path(stage_dir) / DATA_FILE
    current = {"fingerprint": data_fingerprint(data), "examples": len(data)}
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = None
    if before == current:
        return
    if before is not None and start_step > 0 and is_main_process():
        cli.note(
            f"the training data of stage {stage!r} changed since it started "
            f"({before.get('examples')} examples then, {len(data)} now): it resumes at step "
            f"{start_step} on the data as it is now, so the batches from there on differ from "
            "an uninterrupted run's"
        )
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, current)


def kept(state):
    """The parameters a stage evaluates and keeps: the EMA when it keeps one; the model's
    own (feature projections are the training's, not the model's)."""
    return model_params(state.ema_params if state.ema_params is not None else state.params)


def with_feature_projections(params, model, teacher_logits, weights, seed: int):
    """The student's parameters and, where a weighted stage's width differs from the
    teacher's, a learned projection to it; the teacher must run live (features are not
    recorded)."""
    if teacher_logits is None or teacher_logits.store is not None:
        raise UserInputError("stage-feature distillation needs the teacher live (no recording)")
    teacher_dims = teacher_logits.teacher.stage_dims
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    projections = losses.feature_projections(model.stage_dims, teacher_dims, weights, rng)
    return {**params, FEATURE_PROJECTIONS: projections} if projections else params


def _drain(pending: list[dict], stage: str, step: int, checkpointer: TrainCheckpointer) -> dict:
    """Bring the metrics since the last read to the host, stop on NaN/Inf, return their mean."""
    values = jax.device_get(pending)
    pending.clear()
    for offset, metrics in enumerate(values):
        if not all(math.isfinite(float(v)) for v in metrics.values()):
            bad_step = step - len(values) + offset + 1
            last = checkpointer.latest_step()
            where = (
                f"the last good checkpoint (step {last}) is kept in {checkpointer.directory}"
                if last is not None
                else "no checkpoint was written yet"
            )
            raise TrainingDivergedError(
                f"stage {stage!r}: non-finite loss or gradient at step {bad_step} "
                f"({ {k: float(v) for k, v in metrics.items()} }); {where}. Lower the learning "
                "rate or enable gradient clipping, then run the same command again to resume."
            )
    return {k: float(np.mean([m[k] for m in values])) for k in values[-1]}
