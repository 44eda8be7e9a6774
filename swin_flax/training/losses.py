"""Losses of the distillation framework (paper Sec. III-IV): pure functions, chosen by name.

Two families:

* per-batch losses on logits -> scalar: `cross_entropy` (the hard-label loss L_s),
  `mse_logits` (the paper's distillation loss L_d) and `kl_divergence` (Hinton's classic L_d);
* joint losses that combine two scalars L_d and L_s: `arithmetic` (Eq. 1), `linear_alpha`
  (the alpha schedule of Table VI), `harmonic` (Eq. 2) and `weighted_harmonic` (Eq. 4).

`make_distillation_loss(kind, ...)` and `make_joint_loss(kind, ...)` turn a config string into
one of these through a small explicit dict, so the train step never looks code up by name.

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

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from swin_flax.errors import UserInputError

Array = jax.Array
# fn(l_d, l_s, step) -> (loss, {'weight_distill': dL/dl_d, 'weight_hard': dL/dl_s})
JointLossFn = Callable[[Array | None, Array, Array | int], tuple[Array, dict[str, Array]]]
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


# ----------------------------------------------------------------------------- joint losses


def arithmetic(l_d: Array, l_s: Array, alpha: Array | float) -> Array:
    """Paper Eq. 1: L = (1 - alpha) * L_d + alpha * L_s; alpha weighs the hard-label loss."""
    return (1.0 - alpha) * l_d + alpha * l_s


def linear_alpha(step: Array | int, total_steps: int, start: float, end: float) -> Array:
    """alpha moving linearly from `start` (step 0) to `end` (step total_steps), clamped outside.

    Paper Table VI schedules alpha over training because the hard-label loss falls faster than
    the distillation loss (Fig. 3); e.g. [0, 0.5] beat every fixed alpha. Works on a traced step.
    """
    if total_steps <= 0:
        raise UserInputError(f"total_steps must be > 0, got {total_steps}")
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
    return start + (end - start) * progress


def _weighted_harmonic_parts(
    l_d: Array, l_s: Array, w_d: Array, w_s: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Value, dL/dl_d, dL/dl_s and the two ratios a = l_s / D, b = l_d / D.

    With W = w_d + w_s and D = w_d * l_s + w_s * l_d, Eq. 4 is L = W * l_d * l_s / D, and
    dL/dl_d = W * w_d * a^2, dL/dl_s = W * w_s * b^2. Written with the bounded ratios a, b
    (0 <= a, b <= 1 / min(w)) nothing overflows or underflows: the naive
    W / (w_d / l_d + w_s / l_s) has 1/l^2 = inf in its autodiff gradient once l < ~1e-19 in
    float32, and inf / inf = NaN. At D = 0 (both losses 0) the value is 0 and a = b take their
    limit along l_d = l_s, 1 / W, so the gradient weights become w / W: no epsilon is needed,
    and values are exact at every magnitude.
    """
    total = w_d + w_s
    denom = w_d * l_s + w_s * l_d
    ok = denom > 0
    safe = jnp.where(ok, denom, 1.0)
    a = jnp.where(ok, l_s / safe, 1.0 / total)
    b = jnp.where(ok, l_d / safe, 1.0 / total)
    value = total * l_d * a
    return value, total * w_d * a**2, total * w_s * b**2, a, b


@jax.custom_jvp
def _weighted_harmonic(l_d: Array, l_s: Array, w_d: Array, w_s: Array) -> Array:
    return _weighted_harmonic_parts(l_d, l_s, w_d, w_s)[0]


@_weighted_harmonic.defjvp
def _weighted_harmonic_jvp(primals, tangents):
    """Exact derivatives from the bounded ratios (see `_weighted_harmonic_parts`)."""
    l_d, l_s, w_d, w_s = primals
    dl_d, dl_s, dw_d, dw_s = tangents
    value, g_d, g_s, a, b = _weighted_harmonic_parts(l_d, l_s, w_d, w_s)
    total = w_d + w_s
    # dL/dw_d = l_d a (1 - W a), dL/dw_s = l_d a (1 - W b).
    g_wd = l_d * a * (1.0 - total * a)
    g_ws = l_d * a * (1.0 - total * b)
    return value, g_d * dl_d + g_s * dl_s + g_wd * dw_d + g_ws * dw_s


def weighted_harmonic(l_d: Array, l_s: Array, w_d: Array | float, w_s: Array | float) -> Array:
    """Paper Eq. 4: L = (w_d + w_s) / (w_d / L_d + w_s / L_s), for L_d, L_s >= 0.

    The harmonic mean is dominated by the smaller loss, so neither loss can swamp the gradient
    through sheer magnitude (paper Sec. III). It is 0 when either loss is 0 and its gradients
    are finite everywhere, including at 0 and for tiny losses (custom JVP, no epsilon).
    """
    dtype = jnp.result_type(l_d, l_s, jnp.float32)
    args = [jnp.asarray(x, dtype) for x in (l_d, l_s, w_d, w_s)]
    return _weighted_harmonic(*args)


def harmonic(l_d: Array, l_s: Array) -> Array:
    """Paper Eq. 2: L = 2 / (1 / L_d + 1 / L_s).

    Value-wise this is Eq. 1 with alpha = L_d / (L_d + L_s) (paper Eq. 3): the loss re-weights
    itself as the magnitudes change.
    """
    return weighted_harmonic(l_d, l_s, 1.0, 1.0)


# ----------------------------------------------------------------------------- config entries


def _require(kind: str, **options) -> None:
    missing = sorted(name for name, value in options.items() if value is None)
    if missing:
        raise UserInputError(
            f"joint loss {kind!r} needs {', '.join(missing)} (set them in the config)"
        )


def _check_unit_interval(kind: str, **options) -> None:
    for name, value in options.items():
        if not 0.0 <= value <= 1.0:
            raise UserInputError(f"joint loss {kind!r}: {name} must be in [0, 1], got {value}")


def _weights(weight_distill, weight_hard) -> dict[str, Array]:
    # Reported for logging only: never a path for gradients.
    return {
        "weight_distill": jax.lax.stop_gradient(jnp.asarray(weight_distill, jnp.float32)),
        "weight_hard": jax.lax.stop_gradient(jnp.asarray(weight_hard, jnp.float32)),
    }


def _build_arithmetic(*, alpha=None, **_) -> JointLossFn:
    _require("arithmetic", alpha=alpha)
    _check_unit_interval("arithmetic", alpha=alpha)

    def fn(l_d, l_s, step):
        del step
        return arithmetic(l_d, l_s, alpha), _weights(1.0 - alpha, alpha)

    return fn


def _build_linear_alpha(*, alpha_start=None, alpha_end=None, total_steps=None, **_) -> JointLossFn:
    _require("linear_alpha", alpha_start=alpha_start, alpha_end=alpha_end, total_steps=total_steps)
    _check_unit_interval("linear_alpha", alpha_start=alpha_start, alpha_end=alpha_end)
    if total_steps <= 0:
        raise UserInputError(
            f"joint loss 'linear_alpha': total_steps must be > 0, got {total_steps}"
        )

    def fn(l_d, l_s, step):
        alpha = linear_alpha(step, total_steps, alpha_start, alpha_end)
        return arithmetic(l_d, l_s, alpha), _weights(1.0 - alpha, alpha)

    return fn


def _harmonic_fn(w_d: float, w_s: float) -> JointLossFn:
    def fn(l_d, l_s, step):
        del step
        loss = weighted_harmonic(l_d, l_s, w_d, w_s)
        dtype = jnp.result_type(l_d, l_s, jnp.float32)
        _, g_d, g_s, _, _ = _weighted_harmonic_parts(
            *(jnp.asarray(x, dtype) for x in (l_d, l_s, w_d, w_s))
        )
        return loss, _weights(g_d, g_s)

    return fn


def _build_harmonic(**_) -> JointLossFn:
    return _harmonic_fn(1.0, 1.0)


def _build_weighted_harmonic(*, w_d=None, w_s=None, **_) -> JointLossFn:
    _require("weighted_harmonic", w_d=w_d, w_s=w_s)
    if w_d < 0 or w_s < 0 or w_d + w_s <= 0:
        raise UserInputError(
            f"joint loss 'weighted_harmonic': need w_d, w_s >= 0 with a positive "
            f"sum, got w_d={w_d}, w_s={w_s}"
        )
    return _harmonic_fn(float(w_d), float(w_s))


def _build_hard_only(**_) -> JointLossFn:
    def fn(l_d, l_s, step):
        del l_d, step  # no teacher: l_d may be None
        return jnp.asarray(l_s, jnp.float32), _weights(0.0, 1.0)

    return fn


_JOINT_LOSSES: dict[str, Callable[..., JointLossFn]] = {
    "arithmetic": _build_arithmetic,
    "linear_alpha": _build_linear_alpha,
    "harmonic": _build_harmonic,
    "weighted_harmonic": _build_weighted_harmonic,
    "hard_only": _build_hard_only,
}


def _check_kind(kind: str, table: dict, what: str) -> None:
    if kind not in table:
        raise UserInputError(f"unknown {what} {kind!r}; valid kinds: {', '.join(sorted(table))}")


def make_joint_loss(kind: str, **options) -> JointLossFn:
    """The joint loss named by the config: `fn(l_d, l_s, step) -> (loss, weights)`.

    kinds: 'arithmetic' (alpha), 'linear_alpha' (alpha_start, alpha_end, total_steps),
    'harmonic', 'weighted_harmonic' (w_d, w_s) and 'hard_only' (L = L_s, no teacher; l_d may be
    None). Options a kind does not use are ignored, so the whole loss section of a config
    (`settings.LossSettings`) can be passed; options it needs must be given (no hidden defaults).

    `weights` reports the weights in effect, defined for every kind as the gradient weights
    {'weight_distill': dL/dl_d, 'weight_hard': dL/dl_s} at the current values. For the arithmetic
    kinds these are (1 - alpha, alpha). For the harmonic kinds they are
    (w_d + w_s) * w_d * (l_s / D)^2 and (w_d + w_s) * w_s * (l_d / D)^2 with
    D = w_d * l_s + w_s * l_d; for the plain harmonic mean 2 * (1 - alpha)^2 and 2 * alpha^2 with
    the paper's alpha = l_d / (l_d + l_s) of Eq. 3 (the value-wise weights are 1 - alpha and alpha).
    """
    _check_kind(kind, _JOINT_LOSSES, "joint loss")
    return _JOINT_LOSSES[kind](**options)


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


def make_distillation_loss(kind: str, **options) -> DistillationLossFn:
    """The distillation loss named by the config: `fn(student_logits, teacher_logits, mask=None)`.

    'mse' (the paper's choice) or 'kl' (needs temperature > 0); other options are ignored.
    """
    _check_kind(kind, _DISTILLATION_LOSSES, "distillation loss")
    return _DISTILLATION_LOSSES[kind](**options)
