"""The jitted train and eval steps: one pure function each, data parallel over the mesh.

A step receives a uint8 image batch and its labels, sharded over the "data" axis (from a
resident split or a streamed one: `swin_flax.data.feed`); it augments and resizes the
images on the device, runs the frozen teacher (when distilling) and the student on the
same augmented batch, and updates the student. Only the student is differentiated; the teacher's parameters
live outside the optimizer and the checkpoints (as in big_vision's distill trainer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from swin_flax.data.augment import AugmentConfig, augment_batch, mix_batch, preprocess_eval
from swin_flax.errors import UserInputError
from swin_flax.model.swin import SwinTransformer
from swin_flax.settings import LossSettings
from swin_flax.training import joint_losses, losses
from swin_flax.training.distributed import batch_sharded, replicated

# Where a stage's learned feature projections (stage-feature distillation between stages of
# different widths) sit in its trained parameters: beside the model's, which ignores them;
# dropped from the finished model (`model_params`).
FEATURE_PROJECTIONS = "feature_projections"


def model_params(params):
    """The model's own parameters of a train state's (without the feature projections)."""
    return {k: v for k, v in params.items() if k != FEATURE_PROJECTIONS}


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None  # the exponential moving average of params, when kept


def create_train_state(params, tx: optax.GradientTransformation, *, ema: bool = False):
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.array, params) if ema else None,
    )


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
    """The EMA's decay at `step`, warmed up as TensorFlow's ExponentialMovingAverage with
    num_updates: min(decay, (1 + step) / (10 + step)), so a short schedule's average is not
    dominated by the random or pretrained start."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(ema_params, params, step: jax.Array, decay: float):
    d = ema_decay_at(step, decay)
    return jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


class TrainStep:
    """One train step, compiled once per kind of teacher input (see `make_train_step`).

    `step(state, teacher_input, images, labels, rng) -> (state, metrics, teacher_out)`
    where `teacher_input` is None (no teacher), `{"params": teacher_params}` (the teacher runs
    inside the step) or `{"logits": stored}` (recorded logits, (global batch, classes),
    sharded like the batch). `teacher_out` is the float32 teacher logits the loss used (None
    without a teacher): what a recording stores.
    """

    def __init__(self, step: Callable, mesh: Mesh):
        self._step, self._mesh = step, mesh
        self._compiled: dict[str | None, Callable] = {}

    def jitted(self, teacher_input: dict | None) -> Callable:
        kind = None if teacher_input is None else _input_kind(teacher_input)
        if kind not in self._compiled:
            rep, data = replicated(self._mesh), batch_sharded(self._mesh)
            teacher_sharding = {"params": rep, "logits": data}.get(kind, rep)
            self._compiled[kind] = jax.jit(
                self._step,
                in_shardings=(rep, teacher_sharding, data, data, rep),
                out_shardings=(rep, rep, data),
                donate_argnums=(0,),
            )
        return self._compiled[kind]

    def __call__(self, state, teacher_input, images, labels, rng):
        return self.jitted(teacher_input)(state, teacher_input, images, labels, rng)

    def lower(self, state, teacher_input, images, labels, rng):
        return self.jitted(teacher_input).lower(state, teacher_input, images, labels, rng)


def _input_kind(teacher_input: dict) -> str:
    if set(teacher_input) not in ({"params"}, {"logits"}):
        raise ValueError(
            f"teacher_input must be {{'params': ...}} or {{'logits': ...}}, got "
            f"{sorted(teacher_input)}"
        )
    return next(iter(teacher_input))


def make_train_step(
    *,
    student: SwinTransformer,
    teacher: SwinTransformer | None,
    tx: optax.GradientTransformation,
    schedule: Callable[[jax.Array], jax.Array],
    loss_settings: LossSettings,
    total_steps: int,
    augment: AugmentConfig,
    mesh: Mesh,
    round_teacher_logits_to=None,
    ema_decay: float = 0.0,
    feature_weights: tuple[float, ...] = (),
) -> TrainStep:
    """The stage's `TrainStep`: augment the batch, get the teacher's logits, update the
    student.

    Where the teacher's logits come from is the caller's `TeacherLogitSource` business; the step
    only sees its `step_input` (live params or stored logits). `round_teacher_logits_to` (a
    dtype or None) rounds logits the teacher computes live before the loss uses them, so
    that a step reading them back from a recording in that dtype computes exactly the same.

    `total_steps` is the stage's length (the linear alpha schedule runs over it).
    `images` (global batch, H, W, 3) uint8 and `labels` (global batch,) int32 are sharded
    over the mesh, `rng` the run's base key: the step folds in its own number so a
    resumed run draws exactly the same augmentation and stochastic depth. With
    `augment.mixes`, teacher and student see the same Mixup/CutMix batch and the hard-label
    loss uses the mixed targets; with `ema_decay` > 0 the state's `ema_params` follow.

    `feature_weights` (one per stage, distill.feature_weights) add stage-feature
    distillation to the joint loss: sum_i w_i * normalised MSE between the student's and the
    teacher's stage-i outputs (`losses.stage_feature_loss`), through the learned projections
    in `params[FEATURE_PROJECTIONS]` where widths differ. The teacher must run live then.
    """
    if loss_settings.uses_teacher and teacher is None:
        raise UserInputError(f"joint loss {loss_settings.joint!r} needs a teacher model")
    uses_features = any(w > 0 for w in feature_weights)
    if uses_features and teacher is None:
        raise UserInputError("stage-feature distillation needs a teacher model")
    options = dataclasses.asdict(loss_settings)
    joint_loss = joint_losses.make_joint_loss(
        options.pop("joint"), total_steps=total_steps, **options
    )
    distill_loss = losses.make_distillation_loss(options.pop("distillation"), **options)
    data_sharding = batch_sharded(mesh)

    def teacher_outputs_for(teacher_input, batch):
        """(logits, stage features or None) of the teacher, constants for the loss."""
        if teacher_input is None or not loss_settings.uses_teacher:
            return None, None
        if "logits" in teacher_input:
            if uses_features:
                raise ValueError("stage-feature distillation needs the teacher live, not logits")
            return jax.lax.stop_gradient(teacher_input["logits"].astype(jnp.float32)), None
        out = teacher.apply(
            {"params": teacher_input["params"]}, batch, train=False, return_features=uses_features
        )
        out, features = out if uses_features else (out, None)
        if round_teacher_logits_to is not None:
            out = out.astype(round_teacher_logits_to)
        return jax.lax.stop_gradient(out.astype(jnp.float32)), jax.lax.stop_gradient(features)

    def step(state: TrainState, teacher_input, images, batch_labels, rng):
        rng = jax.random.fold_in(rng, state.step)
        batch, targets, dropout_rng = augmented_batch(
            images,
            batch_labels,
            rng,
            augment=augment,
            num_classes=student.num_classes,
            label_smoothing=loss_settings.label_smoothing,
            dtype=student.dtype,
            sharding=data_sharding,
        )
        teacher_out, teacher_features = teacher_outputs_for(teacher_input, batch)
        distill_mask = None
        if teacher_out is not None:
            # The label an example is judged by: its own, or its mix's larger part.
            judged = batch_labels if targets is None else jnp.argmax(targets, axis=-1)
            distill_mask = losses.distillation_mask(
                teacher_out, judged, loss_settings.distill_on, loss_settings.confidence
            )

        def loss_fn(params):
            out = student.apply(
                {"params": params},
                batch,
                train=True,
                rngs={"dropout": dropout_rng},
                return_features=uses_features,
            )
            logits, features = out if uses_features else (out, None)
            hard = hard_label_loss(logits, batch_labels, targets, loss_settings.label_smoothing)
            if teacher_out is None:
                return hard, (logits, {"loss_hard": hard})
            soft = distill_loss(logits, teacher_out, mask=distill_mask)
            distilled = None if distill_mask is None else jnp.any(distill_mask)
            total, weights = joint_loss(soft, hard, state.step, distilled=distilled)
            parts = {"loss_hard": hard, "loss_distill": soft, **weights}
            if uses_features:
                parts["loss_features"] = losses.stage_feature_loss(
                    features, teacher_features, feature_weights, params.get(FEATURE_PROJECTIONS)
                )
                total = total + parts["loss_features"]
            return total, (logits, parts)

        (loss, (logits, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {
            "loss": loss,
            **parts,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch_labels),
            **update_metrics(state, grads, schedule),
        }
        return updated(state, grads, tx, ema_decay), metrics, teacher_out

    return TrainStep(step, mesh)


def augmented_batch(
    images, labels, rng, *, augment: AugmentConfig, num_classes, label_smoothing, dtype, sharding
):
    """`(batch, targets, dropout_rng)` of a step (`rng`: already folded with its number):
    the uint8 images cropped, flipped and resized on the device, then mixed with their
    targets when `augment.mixes` (targets None otherwise: the labels are the targets)."""
    augment_rng, dropout_rng, mix_rng = jax.random.split(rng, 3)
    batch = augment_batch(
        images,
        augment_rng,
        out_size=augment.out_size,
        crop_padding=augment.crop_padding,
        flip=augment.flip,
        resized_crop=augment.resized_crop,
        dtype=dtype,
    )
    targets = None
    if augment.mixes:
        targets = losses.label_targets(labels, num_classes, label_smoothing)
        batch, targets = mix_batch(
            batch,
            targets,
            mix_rng,
            mixup_alpha=augment.mixup_alpha,
            cutmix_alpha=augment.cutmix_alpha,
        )
        batch = batch.astype(dtype)
    return jax.lax.with_sharding_constraint(batch, sharding), targets, dropout_rng


def hard_label_loss(logits, labels, targets, label_smoothing: float):
    """L_s: cross-entropy with the (smoothed) labels, or with the mixed targets."""
    if targets is None:
        return losses.cross_entropy(logits, labels, label_smoothing)
    return losses.soft_cross_entropy(logits, targets)


def update_metrics(state: TrainState, grads, schedule) -> dict:
    norm = optax.tree.norm(grads) if hasattr(optax, "tree") else optax.global_norm(grads)
    return {"learning_rate": schedule(state.step), "grad_norm": norm}


def updated(state: TrainState, grads, tx, ema_decay: float) -> TrainState:
    """The state after one optimizer update (and the EMA's, when kept)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay > 0:
        ema = update_ema(ema, params, state.step, ema_decay)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)


def make_eval_step(model: SwinTransformer, *, image_size: int, mesh: Mesh):
    """Returns `eval_step(params, images, labels, mask) -> (correct, count)` of a uint8
    batch sharded over the mesh (rows where `mask` is False are padding)."""
    data_sharding = batch_sharded(mesh)

    def eval_step(params, images, labels, mask):
        batch = preprocess_eval(images, out_size=image_size, dtype=model.dtype)
        batch = jax.lax.with_sharding_constraint(batch, data_sharding)
        logits = model.apply({"params": params}, batch, train=False)
        correct = (jnp.argmax(logits, -1) == labels) & mask
        return jnp.sum(correct), jnp.sum(mask)

    rep = replicated(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(rep, data_sharding, data_sharding, data_sharding),
        out_shardings=(rep, rep),
    )


def make_predict_fn(model: SwinTransformer):
    """Jitted logits for already-preprocessed NHWC images (used for throughput)."""
    return jax.jit(lambda params, images: model.apply({"params": params}, images, train=False))
