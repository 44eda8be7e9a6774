"""The train step of a multi-exit Swin (swin_flax/model/exits.py): the teacher and its
students trained together, in one model.

    L = L_s(full path) + sum over exits e of joint(L_d(exit e, stop_gradient(full path)), L_s(exit e))

The full path learns the task from the labels alone, as the teacher's fine-tuning does;
each exit learns from the labels and from the full path, as a distilled student does
(`distill.*`: the distillation loss, the joint loss and its weights, distill_on). The full
path is not frozen: it keeps improving while the exits learn from it, and gradients from
the exits' hard-label losses reach the blocks they share with it. The full path's logits
are a constant in the distillation terms (the short paths approximate the full one, not the
reverse).

The step has `TrainStep`'s signature and no teacher input: (state, None, images, labels,
rng) -> (state, metrics, None); augmentation, Mixup/CutMix, EMA and the update are the
distillation step's (swin_flax/training/step.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from swin_flax.data.augment import AugmentConfig
from swin_flax.model.exits import MultiExitSwin
from swin_flax.settings import LossSettings
from swin_flax.training import joint_losses, losses
from swin_flax.training.distributed import batch_sharded
from swin_flax.training.step import (
    TrainState,
    TrainStep,
    augmented_batch,
    hard_label_loss,
    update_metrics,
    updated,
)


def make_multi_exit_step(
    *,
    model: MultiExitSwin,
    tx: optax.GradientTransformation,
    schedule: Callable[[jax.Array], jax.Array],
    full_path_smoothing: float,
    exit_loss: LossSettings,
    total_steps: int,
    augment: AugmentConfig,
    mesh: Mesh,
    ema_decay: float = 0.0,
) -> TrainStep:
    """`full_path_smoothing`: the label smoothing of the full path's L_s (the teacher's,
    finetune.label_smoothing); `exit_loss`: the exits' losses (the students', distill.*)."""
    options = dataclasses.asdict(exit_loss)
    joint_loss = joint_losses.make_joint_loss(
        options.pop("joint"), total_steps=total_steps, **options
    )
    distill_loss = losses.make_distillation_loss(options.pop("distillation"), **options)
    data_sharding = batch_sharded(mesh)
    num_classes = model.config.num_classes

    def step(state: TrainState, teacher_input, images, labels, rng):
        del teacher_input  # the teacher is the model's own full path
        rng = jax.random.fold_in(rng, state.step)
        batch, targets, dropout_rng = augmented_batch(
            images,
            labels,
            rng,
            augment=augment,
            num_classes=num_classes,
            label_smoothing=full_path_smoothing,
            dtype=model.dtype,
            sharding=data_sharding,
        )
        judged = labels if targets is None else jnp.argmax(targets, axis=-1)

        def loss_fn(params):
            logits = model.apply(
                {"params": params}, batch, train=True, rngs={"dropout": dropout_rng}
            )
            full = logits[0]
            total = hard_label_loss(full, labels, targets, full_path_smoothing)
            parts = {"loss_full_path": total}
            teacher = jax.lax.stop_gradient(full)
            mask = losses.distillation_mask(
                teacher, judged, exit_loss.distill_on, exit_loss.confidence
            )
            distilled = None if mask is None else jnp.any(mask)
            for e in range(1, logits.shape[0]):
                hard = hard_label_loss(logits[e], labels, targets, exit_loss.label_smoothing)
                soft = distill_loss(logits[e], teacher, mask=mask)
                joint, _ = joint_loss(soft, hard, state.step, distilled=distilled)
                parts |= {f"exit{e}_loss_hard": hard, f"exit{e}_loss_distill": soft}
                total = total + joint
            return total, (logits, parts)

        (loss, (logits, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        correct = jnp.mean(jnp.argmax(logits, -1) == labels[None], axis=-1)
        metrics = {
            "loss": loss,
            **parts,
            "accuracy": correct[0],
            **{f"exit{e}_accuracy": correct[e] for e in range(1, logits.shape[0])},
            **update_metrics(state, grads, schedule),
        }
        return updated(state, grads, tx, ema_decay), metrics, None

    return TrainStep(step, mesh)
