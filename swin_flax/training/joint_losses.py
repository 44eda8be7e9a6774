"""Joint losses: how the distillation loss L_d and the hard-label loss L_s combine (paper
Sec. III-IV): `arithmetic` (Eq. 1), `linear_alpha` (the alpha schedule of Table VI),
`harmonic` (Eq. 2), `weighted_harmonic` (Eq. 4) and `dynamic_alpha` (Eq. 3's alpha as a
weight). `make_joint_loss(kind, ...)` turns a config string into one through a small
explicit dict. The per-batch losses themselves are in `swin_flax.training.losses`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from swin_flax.errors import UserInputError
from swin_flax.training.losses import Array, check_kind

# fn(l_d, l_s, step, distilled=None) -> (loss, {'weight_distill': dL/dl_d, 'weight_hard': dL/dl_s})
JointLossFn = Callable[..., tuple[Array, dict[str, Array]]]


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
) -> tuple[Array, Array, Array]:
    """Eq. 4's value and its derivatives dL/dl_d, dL/dl_s.

    With W = w_d + w_s and D = w_d * l_s + w_s * l_d, Eq. 4 is L = W * l_d * l_s / D, and
    dL/dl_d = W * w_d * a^2, dL/dl_s = W * w_s * b^2 with the ratios a = l_s / D, b = l_d / D.
    With both weights > 0 the ratios are bounded (0 <= a, b <= 1 / min(w)), so nothing
    overflows or underflows: the naive W / (w_d / l_d + w_s / l_s) has 1/l^2 = inf in its
    autodiff gradient once l < ~1e-19 in float32, and inf / inf = NaN. At D = 0 (both losses
    0) the value is 0 and a = b take their limit along l_d = l_s, 1 / W, so the gradient
    weights become w / W: no epsilon is needed, and values are exact at every magnitude.

    A zero weight removes its loss from Eq. 4: for w_d = 0, L = w_s l_d l_s / (w_s l_d) = l_s
    for every l_d > 0, so its limit at l_d = 0 is l_s too (not the 0 of the formula's 0/0),
    with gradient (0, 1); w_s = 0 likewise gives L = l_d, gradient (1, 0). The ratio a of the
    general formula is unbounded there (l_s / (w_s l_d)), hence the separate branches.
    """
    total = w_d + w_s
    denom = w_d * l_s + w_s * l_d
    ok = denom > 0
    safe = jnp.where(ok, denom, 1.0)
    a = jnp.where(ok, l_s / safe, 1.0 / total)
    b = jnp.where(ok, l_d / safe, 1.0 / total)
    both = (total * l_d * a, total * w_d * a**2, total * w_s * b**2)
    zero, one = jnp.zeros_like(l_d), jnp.ones_like(l_d)
    hard_only = (l_s, zero, one)  # w_d = 0
    distill_only = (l_d, one, zero)  # w_s = 0
    return tuple(
        jnp.where(w_d == 0, h, jnp.where(w_s == 0, d, g))
        for g, h, d in zip(both, hard_only, distill_only)
    )


def weighted_harmonic(l_d: Array, l_s: Array, w_d: Array | float, w_s: Array | float) -> Array:
    """Paper Eq. 4: L = (w_d + w_s) / (w_d / L_d + w_s / L_s), for L_d, L_s >= 0 and weights
    >= 0 with a positive sum.

    The harmonic mean is dominated by the smaller loss, so neither loss can swamp the gradient
    through sheer magnitude (paper Sec. III). Where the formula is 0/0 the value and the
    gradient are its limit, finite everywhere, at 0 and for tiny losses too (no epsilon):

    * both weights > 0: L -> 0 as either loss -> 0 (the mean follows the smaller loss), so
      L = 0 when L_d or L_s is exactly 0, with that limit's finite gradient;
    * w_d = 0: L = L_s for every L_d, L_d = 0 included, gradient (0, 1) (w_s = 0: L = L_d,
      gradient (1, 0)); a zero weight switches its loss off instead of zeroing the total.

    Eq. 4 is homogeneous of degree 1 in (L_d, L_s), so L = g_d L_d + g_s L_s with g its
    gradient (Euler): the loss is written as its gradient weights, held fixed
    (`stop_gradient`), times the losses. Autodiff then gives exactly (g_d, g_s), the value
    is the exact one, and the weights w_d, w_s (the config's constants) get no gradient.
    """
    dtype = jnp.result_type(l_d, l_s, jnp.float32)
    l_d, l_s, w_d, w_s = (jnp.asarray(x, dtype) for x in (l_d, l_s, w_d, w_s))
    value, g_d, g_s = jax.lax.stop_gradient(_weighted_harmonic_parts(l_d, l_s, w_d, w_s))
    linear = g_d * l_d + g_s * l_s
    return value + (linear - jax.lax.stop_gradient(linear))


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
        _, g_d, g_s = _weighted_harmonic_parts(
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


def dynamic_alpha(l_d: Array, l_s: Array) -> Array:
    """Paper Eq. 3 used as written: Eq. 1 with alpha = L_d / (L_d + L_s), alpha held fixed in
    the gradient (it only re-weights). So dL/dL_d = 1 - alpha, dL/dL_s = alpha: the hard-label
    loss gets the larger weight while the distillation loss is the larger one. (Without the
    stop-gradient the same expression is the harmonic mean, Eq. 2.)"""
    l_d, l_s = jnp.asarray(l_d, jnp.float32), jnp.asarray(l_s, jnp.float32)
    total = l_d + l_s
    alpha = jax.lax.stop_gradient(jnp.where(total > 0, l_d / jnp.where(total > 0, total, 1), 0.5))
    return arithmetic(l_d, l_s, alpha)


def _build_dynamic_alpha(**_) -> JointLossFn:
    def fn(l_d, l_s, step):
        del step
        total = l_d + l_s
        alpha = jnp.where(total > 0, l_d / jnp.where(total > 0, total, 1), 0.5)
        return dynamic_alpha(l_d, l_s), _weights(1.0 - alpha, alpha)

    return fn


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
    "dynamic_alpha": _build_dynamic_alpha,
    "hard_only": _build_hard_only,
}


def _hard_when_nothing_is_distilled(fn: JointLossFn) -> JointLossFn:
    """`fn` with a `distilled` flag: where it is False (no example of the batch qualified
    for distillation), the loss is L_s alone with weights (0, 1), whatever the kind."""

    def with_fallback(l_d, l_s, step, distilled=None):
        loss, weights = fn(l_d, l_s, step)
        if distilled is None:
            return loss, weights
        hard = jnp.asarray(l_s, loss.dtype)
        # jnp.where: the joint branch's gradient is multiplied by 0, and it is finite
        # everywhere (see `_weighted_harmonic_parts`), so nothing leaks from it.
        fallback = {"weight_distill": 0.0, "weight_hard": 1.0}
        return jnp.where(distilled, loss, hard), {
            name: jnp.where(distilled, value, fallback[name]) for name, value in weights.items()
        }

    return with_fallback


def make_joint_loss(kind: str, **options) -> JointLossFn:
    """The joint loss named by the config: `fn(l_d, l_s, step, distilled=None) -> (loss,
    weights)`.

    `distilled` (a traced bool, or None for "every example is distilled") says whether any
    example of the batch qualified for the distillation loss (`distill_on`). Where none did,
    L_d is 0 only because nothing was averaged, and the harmonic kinds would give L = 0 and
    a zero gradient (the mean follows the smaller loss), arithmetic with alpha = 0 too: so
    such a batch is trained on the hard-label loss alone, L = L_s with weights (0, 1), for
    every kind (what `hard_only` does), and the student still learns from it.

    kinds: 'arithmetic' (alpha), 'linear_alpha' (alpha_start, alpha_end, total_steps),
    'harmonic', 'weighted_harmonic' (w_d, w_s), 'dynamic_alpha' (Eq. 3's alpha, fixed in the
    gradient) and 'hard_only' (L = L_s, no teacher; l_d may be None). Options a kind does
    not use are ignored, so the whole loss section of a config (`settings.LossSettings`) can
    be passed; options it needs must be given (no hidden defaults).

    `weights` reports the weights in effect, defined for every kind as the gradient weights
    {'weight_distill': dL/dl_d, 'weight_hard': dL/dl_s} at the current values. For the arithmetic
    kinds these are (1 - alpha, alpha). For the harmonic kinds they are
    (w_d + w_s) * w_d * (l_s / D)^2 and (w_d + w_s) * w_s * (l_d / D)^2 with
    D = w_d * l_s + w_s * l_d; for the plain harmonic mean 2 * (1 - alpha)^2 and 2 * alpha^2 with
    the paper's alpha = l_d / (l_d + l_s) of Eq. 3 (the value-wise weights are 1 - alpha and alpha).
    """
    check_kind(kind, _JOINT_LOSSES, "joint loss")
    return _hard_when_nothing_is_distilled(_JOINT_LOSSES[kind](**options))
