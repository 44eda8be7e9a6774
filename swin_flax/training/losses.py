"""Losses of the distillation framework (paper Sec. III-IV): pure functions, chosen by name.

Two families:

* per-batch losses on logits -> scalar: `cross_entropy` (the hard-label loss L_s),
  `mse_logits` (the paper's distillation loss L_d) and `kl_divergence` (Hinton's classic L_d);
* joint losses that combine two scalars L_d and L_s live in `swin_flax.training.joint_losses`.

`make_distillation_loss(kind, ...)` (and `joint_losses.make_joint_loss`) turn a config string
into one of these through a small explicit dict, so the train step never looks code up by name.

Conventions shared by every function here:

* logits are cast to float32 first, so a bf16 model never computes a loss in bf16;
* teacher logits are constants (`jax.lax.stop_gradient`): only the student is differentiated,
  even if a caller accidentally differentiates through the teacher;
* an optional boolean `mask` (one entry per example) excludes padded examples: the loss is the
  mean over the valid examples only, and 0 when there are none. Padded rows are removed with
  `jnp.where`, not multiplied by 0, so garbage (even NaN) in a padded row cannot leak into the
  value; with finite padded rows their gradient is exactly 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from swin_flax.errors import UserInputError

Array = jax.Array
# fn(student_logits, teacher_logits, mask=None) -> scalar
DistillationLossFn = Callable[..., Array]


# ----------------------------------------------------------------------------- per-batch losses


def _masked_mean(per_example: Array, mask: Array | None) -> Array:
    """Mean over examples, or over the valid ones only; 0 if no example is valid."""
    if mask is None:
        return jnp.mean(per_example)
    mask = jnp.asarray(mask, dtype=bool)
    if mask.shape != per_example.shape:
        raise UserInputError(
            f"mask shape {mask.shape} must be one bool per example, i.e. {per_example.shape}"
        )
    total = jnp.sum(jnp.where(mask, per_example, 0.0))
    count = jnp.sum(mask)
    return total / jnp.maximum(count, 1).astype(per_example.dtype)


def cross_entropy(
    logits: Array, labels: Array, label_smoothing: float = 0.0, mask: Array | None = None
) -> Array:
    """Softmax cross entropy with integer labels, mean over the batch (the hard-label loss L_s).

    Label smoothing follows optax/torch: the target is (1 - eps) * one_hot + eps / num_classes,
    so the smoothed loss is (1 - eps) * CE(one_hot) + eps * mean_c(-log p_c).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise UserInputError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    logits = jnp.asarray(logits, jnp.float32)
    labels = jnp.asarray(labels)
    if label_smoothing > 0.0:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        per_example = optax.softmax_cross_entropy(logits, targets)
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _masked_mean(per_example, mask)


def label_targets(labels: Array, num_classes: int, label_smoothing: float = 0.0) -> Array:
    """(B,) integer labels -> (B, classes) float32 targets, smoothed as `cross_entropy` does:
    what Mixup/CutMix mix (timm smooths before mixing too)."""
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return optax.smooth_labels(targets, label_smoothing) if label_smoothing > 0 else targets


def soft_cross_entropy(logits: Array, targets: Array, mask: Array | None = None) -> Array:
    """Softmax cross entropy with (B, classes) probability targets (mixed labels), batch mean."""
    per_example = optax.softmax_cross_entropy(jnp.asarray(logits, jnp.float32), targets)
    return _masked_mean(per_example, mask)


def mse_logits(student_logits: Array, teacher_logits: Array, mask: Array | None = None) -> Array:
    """Mean squared error between logits, mean over every element (torch MSELoss default).

    The paper's distillation loss: logit matching is the tau -> infinity limit of KD and needs
    no temperature (paper Sec. IV-B2). With a mask the mean is over the valid examples' elements.
    """
    student = jnp.asarray(student_logits, jnp.float32)
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32))
    if student.shape != teacher.shape:
        raise UserInputError(
            f"student logits {student.shape} and teacher logits {teacher.shape} "
            "must have the same shape"
        )
    per_example = jnp.mean(jnp.square(student - teacher), axis=-1)
    return _masked_mean(per_example, mask)


def kl_divergence(
    student_logits: Array, teacher_logits: Array, temperature: float, mask: Array | None = None
) -> Array:
    """Hinton et al.'s KD loss: tau^2 * mean_batch KL(softmax(t / tau) || softmax(s / tau)).

    KL is summed over classes and averaged over examples (torch's KLDivLoss 'batchmean').
    The tau^2 factor keeps the gradient magnitude independent of tau, so the loss weights
    need no retuning when tau changes.
    """
    if temperature <= 0:
        raise UserInputError(f"temperature must be > 0, got {temperature}")
    student = jnp.asarray(student_logits, jnp.float32)
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32))
    if student.shape != teacher.shape:
        raise UserInputError(
            f"student logits {student.shape} and teacher logits {teacher.shape} "
            "must have the same shape"
        )
    log_p_student = jax.nn.log_softmax(student / temperature, axis=-1)
    log_p_teacher = jax.nn.log_softmax(teacher / temperature, axis=-1)
    per_example = optax.losses.kl_divergence_with_log_targets(log_p_student, log_p_teacher)
    return temperature**2 * _masked_mean(per_example, mask)


def normalized_feature_mse(student: Array, teacher: Array, mask: Array | None = None) -> Array:
    """Distance between two (B, H, W, C) stage outputs: the mean squared difference of the
    per-token standardised features (zero mean, unit variance over channels, as a LayerNorm
    without scale or bias), mean over tokens and channels, then over examples. Invariant to
    each token's scale and offset, so stages whose activations differ in magnitude weigh
    alike; 0 exactly when the normalised features agree."""
    student = jnp.asarray(student, jnp.float32)
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher, jnp.float32))
    if student.shape != teacher.shape:
        raise UserInputError(
            f"student features {student.shape} and teacher features {teacher.shape} must have "
            "the same shape (a projection maps the student's width to the teacher's)"
        )

    def standardised(x: Array) -> Array:
        x = x - jnp.mean(x, axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6)

    squared = jnp.square(standardised(student) - standardised(teacher))
    return _masked_mean(jnp.mean(squared, axis=tuple(range(1, squared.ndim))), mask)


def parse_feature_weights(text: str) -> tuple[float, ...]:
    """distill.feature_weights as numbers: '0,0,1,1' or '0 0 1 1' -> (0.0, 0.0, 1.0, 1.0);
    () for '' (off). A ValueError for a part that is not a number."""
    return tuple(float(part) for part in re.split(r"[,\s]+", text.strip()) if part)


def uses_features(weights: tuple[float, ...]) -> bool:
    return any(w > 0 for w in weights)


def stage_feature_loss(
    student_features: dict,
    teacher_features: dict,
    weights: tuple[float, ...],
    projections: dict | None = None,
    mask: Array | None = None,
) -> Array:
    """sum_i weights[i] * normalized_feature_mse(P_i(student stage i), teacher stage i) over
    the stages with a weight > 0. `projections` maps 'stage_i' to a (C_student, C_teacher)
    kernel where the widths differ (learned, on the student's side); elsewhere P_i is the
    identity."""
    total = jnp.zeros((), jnp.float32)
    for i, weight in enumerate(weights):
        if weight <= 0:
            continue
        key = f"stage_{i}"
        student = student_features[key]
        if projections and key in projections:
            student = jnp.asarray(student, jnp.float32) @ projections[key]
        total = total + weight * normalized_feature_mse(student, teacher_features[key], mask)
    return total


def feature_projections(
    student_dims: tuple[int, ...], teacher_dims: tuple[int, ...], weights, rng: Array
) -> dict:
    """Kernels for the weighted stages whose widths differ (truncated normal, std 0.02, as
    the model's Dense layers); {} when every weighted stage has the teacher's width."""
    kernels = {}
    init = jax.nn.initializers.truncated_normal(0.02)
    for i, weight in enumerate(weights):
        if weight > 0 and student_dims[i] != teacher_dims[i]:
            kernels[f"stage_{i}"] = init(
                jax.random.fold_in(rng, i), (student_dims[i], teacher_dims[i]), jnp.float32
            )
    return kernels


def distillation_mask(
    teacher_logits: Array, labels: Array, where: str, confidence: float = 0.5
) -> Array | None:
    """Which examples the distillation loss averages over (`distill_on`): None for all,
    else a (B,) bool: where the teacher's top-1 is the label ('teacher_correct'), or where its
    top softmax probability is at least `confidence` ('teacher_confident'). A batch without
    such an example has L_d = 0, and the train step then trains it on the hard-label loss
    alone (`joint_losses.make_joint_loss`'s `distilled` flag: `jnp.any(mask)`)."""
    if where == "all":
        return None
    teacher_logits = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32))
    if where == "teacher_correct":
        return jnp.argmax(teacher_logits, axis=-1) == labels
    if where == "teacher_confident":
        return jnp.max(jax.nn.softmax(teacher_logits, axis=-1), axis=-1) >= confidence
    raise UserInputError(f"distill_on must be all, teacher_correct or teacher_confident: {where!r}")


def _build_mse(**_) -> DistillationLossFn:
    return mse_logits  # logit matching needs no temperature (paper Sec. IV-B2)


def _build_kl(*, temperature=None, **_) -> DistillationLossFn:
    if temperature is None or temperature <= 0:
        raise UserInputError(f"distillation loss 'kl' needs a temperature > 0, got {temperature}")

    def fn(student_logits, teacher_logits, mask=None):
        return kl_divergence(student_logits, teacher_logits, temperature, mask=mask)

    return fn


_DISTILLATION_LOSSES: dict[str, Callable[..., DistillationLossFn]] = {
    "mse": _build_mse,
    "kl": _build_kl,
}


def check_kind(kind: str, table: dict, what: str) -> None:
    if kind not in table:
        raise UserInputError(f"unknown {what} {kind!r}; valid kinds: {', '.join(sorted(table))}")


def make_distillation_loss(kind: str, **options) -> DistillationLossFn:
    """The distillation loss named by the config: `fn(student_logits, teacher_logits, mask=None)`.

    'mse' (the paper's choice) or 'kl' (needs temperature > 0); other options are ignored.
    """
    check_kind(kind, _DISTILLATION_LOSSES, "distillation loss")
    return _DISTILLATION_LOSSES[kind](**options)
