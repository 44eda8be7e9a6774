"""The jitted train and eval steps: one pure function each, data parallel over the mesh.

A step receives the whole (replicated, uint8) data set and a batch of indices sharded
over the "data" axis; it gathers, augments and resizes the images on the device, runs
the frozen teacher (when distilling) and the student on the same augmented batch,
and updates the student. Only the student is differentiated; the teacher's parameters
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

from swin_flax.data.augment import AugmentConfig, augment_batch, preprocess_eval
from swin_flax.errors import UserInputError
from swin_flax.model.swin import SwinTransformer
from swin_flax.settings import LossSettings
from swin_flax.training import losses
from swin_flax.training.distributed import batch_sharded, replicated


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def create_train_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def make_train_step(
    *,
    student: SwinTransformer,
    teacher: SwinTransformer | None,
    tx: optax.GradientTransformation,
    schedule: Callable[[jax.Array], jax.Array],
    loss_config: LossSettings,
    total_steps: int,
    augment: AugmentConfig,
    mesh: Mesh,
    teacher_logits: str = "live",
    logits_store_dtype=None,
):
    """Returns `step(state, teacher_params, images, labels, indices, rng) -> (state, metrics)`.

    `teacher_logits` says where a distilling step gets the teacher's logits (logit_cache.py):
      'live'    the teacher runs on the augmented batch (the default);
      'record'  the same, and the step also returns them: `-> (state, metrics, logits)`,
                rounded to `logits_store_dtype` first (when given) and used rounded, so that
                a later step reading the stored logits computes exactly the same;
      'input'   the teacher does not run: `step(state, None, images, labels, indices, rng,
                logits)` with the stored logits, (global batch, classes), sharded like indices.

    `total_steps` is the stage's length (the linear alpha schedule runs over it).
    `images`/`labels` are the full replicated data set, `indices` (global batch,) int32
    sharded over the mesh, `rng` the run's base key: the step folds in its own number so a
    resumed run draws exactly the same augmentation and stochastic depth.
    """
    if loss_config.uses_teacher and teacher is None:
        raise UserInputError(f"joint loss {loss_config.joint!r} needs a teacher model")
    options = dataclasses.asdict(loss_config)
    joint_loss = losses.make_joint_loss(options.pop("joint"), total_steps=total_steps, **options)
    distill_loss = losses.make_distillation_loss(options.pop("distillation"), **options)
    if teacher_logits not in ("live", "record", "input"):
        raise ValueError(f"teacher_logits must be live, record or input, got {teacher_logits!r}")
    if teacher_logits != "live" and not loss_config.uses_teacher:
        raise ValueError(f"teacher_logits={teacher_logits!r} needs a distillation loss")
    data_sharding = batch_sharded(mesh)

    def step(state: TrainState, teacher_params, images, labels, indices, rng, given_logits=None):
        rng = jax.random.fold_in(rng, state.step)
        augment_rng, dropout_rng = jax.random.split(rng)
        batch = augment_batch(
            images[indices],
            augment_rng,
            out_size=augment.out_size,
            crop_padding=augment.crop_padding,
            flip=augment.flip,
            dtype=student.dtype,
        )
        batch = jax.lax.with_sharding_constraint(batch, data_sharding)
        batch_labels = labels[indices]

        if teacher_logits == "input":
            teacher_out = jax.lax.stop_gradient(given_logits.astype(jnp.float32))
        elif loss_config.uses_teacher:
            teacher_out = jax.lax.stop_gradient(
                teacher.apply({"params": teacher_params}, batch, train=False)
            )
            if teacher_logits == "record" and logits_store_dtype is not None:
                teacher_out = teacher_out.astype(logits_store_dtype).astype(jnp.float32)
        else:
            teacher_out = None

        def loss_fn(params):
            logits = student.apply(
                {"params": params}, batch, train=True, rngs={"dropout": dropout_rng}
            )
            hard = losses.cross_entropy(logits, batch_labels, loss_config.label_smoothing)
            if teacher_out is None:
                return hard, (logits, {"loss_hard": hard})
            soft = distill_loss(logits, teacher_out)
            total, weights = joint_loss(soft, hard, state.step)
            return total, (logits, {"loss_hard": hard, "loss_distill": soft, **weights})

        (loss, (logits, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            **parts,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch_labels),
            "learning_rate": schedule(state.step),
            "grad_norm": optax.tree.norm(grads)
            if hasattr(optax, "tree")
            else optax.global_norm(grads),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        if teacher_logits == "record":
            return new_state, metrics, teacher_out
        return new_state, metrics

    rep = replicated(mesh)
    if teacher_logits == "input":
        return jax.jit(
            step,
            in_shardings=(rep, rep, rep, rep, data_sharding, rep, data_sharding),
            out_shardings=(rep, rep),
            donate_argnums=(0,),
        )
    return jax.jit(
        step,
        in_shardings=(rep, rep, rep, rep, data_sharding, rep),
        out_shardings=(rep, rep) + ((data_sharding,) if teacher_logits == "record" else ()),
        donate_argnums=(0,),
    )


def make_eval_step(model: SwinTransformer, *, image_size: int, mesh: Mesh):
    """Returns `eval_step(params, images, labels, indices, mask) -> (correct, count)`."""
    data_sharding = batch_sharded(mesh)

    def eval_step(params, images, labels, indices, mask):
        batch = preprocess_eval(images[indices], out_size=image_size, dtype=model.dtype)
        batch = jax.lax.with_sharding_constraint(batch, data_sharding)
        logits = model.apply({"params": params}, batch, train=False)
        correct = (jnp.argmax(logits, -1) == labels[indices]) & mask
        return jnp.sum(correct), jnp.sum(mask)

    rep = replicated(mesh)
    return jax.jit(
        eval_step,
        in_shardings=(rep, rep, rep, data_sharding, data_sharding),
        out_shardings=(rep, rep),
    )


def make_predict_fn(model: SwinTransformer):
    """Jitted logits for already-preprocessed NHWC images (used for throughput)."""
    return jax.jit(lambda params, images: model.apply({"params": params}, images, train=False))
