"""swin_flax/training/joint_losses.py: Eq. 1-4 and the alpha schedule, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax.training import joint_losses

ZERO_WEIGHT_CASES = [
    # l_d, l_s, w_d, w_s, expected value, expected (dL/dl_d, dL/dl_s)
    (0.5, 2.0, 0.0, 1.0, 2.0, (0.0, 1.0)),
    (0.0, 2.0, 0.0, 1.0, 2.0, (0.0, 1.0)),
    (1e-30, 2.0, 0.0, 1.0, 2.0, (0.0, 1.0)),
    (1e-39, 2.0, 0.0, 3.0, 2.0, (0.0, 1.0)),  # subnormal: w_s * l_d flushes to 0
    (0.0, 0.0, 0.0, 1.0, 0.0, (0.0, 1.0)),
    (3.0, 0.0, 2.0, 0.0, 3.0, (1.0, 0.0)),
    (3.0, 1e-30, 2.0, 0.0, 3.0, (1.0, 0.0)),
]


def test_arithmetic_value_and_gradient():
    assert float(joint_losses.arithmetic(2.0, 4.0, 0.25)) == pytest.approx(0.75 * 2 + 0.25 * 4)
    g = jax.grad(joint_losses.arithmetic, argnums=(0, 1))(2.0, 4.0, 0.25)
    assert (float(g[0]), float(g[1])) == (0.75, 0.25)


@pytest.mark.parametrize(
    "step, expected", [(-5, 0.0), (0, 0.0), (25, 0.125), (50, 0.25), (100, 0.5), (150, 0.5)]
)
def test_linear_alpha(step, expected):
    assert float(joint_losses.linear_alpha(step, 100, 0.0, 0.5)) == pytest.approx(expected)


def test_linear_alpha_decreasing_and_traced():
    fn = jax.jit(lambda s: joint_losses.linear_alpha(s, 10, 1.0, 0.5))
    assert float(fn(jnp.asarray(4))) == pytest.approx(0.8)


def test_harmonic_values():
    assert float(joint_losses.harmonic(1.0, 3.0)) == pytest.approx(2 / (1 / 1 + 1 / 3))
    assert float(joint_losses.weighted_harmonic(0.5, 4.0, 13.0, 1.0)) == pytest.approx(
        14 / (13 / 0.5 + 1 / 4.0)
    )


@pytest.mark.parametrize("l_d, l_s", [(0.3, 4.2), (2.0, 2.0), (5.0, 0.01)])
def test_harmonic_equals_arithmetic_with_eq3_alpha(l_d, l_s):
    alpha = l_d / (l_d + l_s)  # paper Eq. 3
    np.testing.assert_allclose(
        joint_losses.harmonic(l_d, l_s), joint_losses.arithmetic(l_d, l_s, alpha), rtol=1e-6
    )


@pytest.mark.parametrize(
    "l_d, l_s, w_d, w_s", [(0.5, 4.0, 13.0, 1.0), (2.0, 0.1, 1.0, 1.0), (1e-3, 3.0, 2.0, 5.0)]
)
def test_weighted_harmonic_gradients_are_analytic(l_d, l_s, w_d, w_s):
    h = w_d / l_d + w_s / l_s
    g = jax.grad(joint_losses.weighted_harmonic, argnums=(0, 1, 2, 3))(l_d, l_s, w_d, w_s)
    np.testing.assert_allclose(g[0], (w_d + w_s) * w_d / l_d**2 / h**2, rtol=1e-5)
    np.testing.assert_allclose(g[1], (w_d + w_s) * w_s / l_s**2 / h**2, rtol=1e-5)
    # the weights are the config's constants, never trained: no gradient
    assert (float(g[2]), float(g[3])) == (0.0, 0.0)


def test_harmonic_is_safe_at_zero_and_tiny_losses():
    grad = jax.grad(joint_losses.weighted_harmonic, argnums=(0, 1))
    # one loss exactly 0: value 0, gradient (W/w_d, 0) i.e. only the zero loss matters
    assert float(joint_losses.weighted_harmonic(0.0, 2.0, 3.0, 1.0)) == 0.0
    np.testing.assert_allclose(grad(0.0, 2.0, 3.0, 1.0), (4.0 / 3.0, 0.0), rtol=1e-6)
    # both 0: value 0, finite gradient (the l_d = l_s limit, w / (w_d + w_s))
    assert float(joint_losses.weighted_harmonic(0.0, 0.0, 3.0, 1.0)) == 0.0
    np.testing.assert_allclose(grad(0.0, 0.0, 3.0, 1.0), (0.75, 0.25), rtol=1e-6)
    # tiny losses (1/l^2 would overflow float32): still the exact values
    np.testing.assert_allclose(joint_losses.harmonic(1e-30, 3e-30), 1.5e-30, rtol=1e-5)
    np.testing.assert_allclose(grad(1e-30, 3e-30, 1.0, 1.0), (2 * 0.75**2, 2 * 0.25**2), rtol=1e-5)


def test_harmonic_is_exact_at_normal_magnitudes():
    l_d, l_s = np.float32(0.37), np.float32(2.9)
    reference = np.float32(2) / (np.float32(1) / l_d + np.float32(1) / l_s)
    np.testing.assert_allclose(joint_losses.harmonic(l_d, l_s), reference, rtol=2e-7)


@pytest.mark.parametrize("l_d, l_s, w_d, w_s, value, grads", ZERO_WEIGHT_CASES)
def test_a_zero_weight_leaves_the_other_loss_with_a_finite_gradient(
    l_d, l_s, w_d, w_s, value, grads
):
    assert float(joint_losses.weighted_harmonic(l_d, l_s, w_d, w_s)) == pytest.approx(
        value, rel=1e-6
    )
    g = jax.grad(joint_losses.weighted_harmonic, argnums=(0, 1, 2, 3))(l_d, l_s, w_d, w_s)
    assert np.all(np.isfinite(np.asarray(g))), g
    np.testing.assert_allclose(g[:2], grads, atol=1e-6)


def test_a_zero_weight_in_the_train_step_loss_reports_finite_weights():
    fn = jax.jit(joint_losses.make_joint_loss("weighted_harmonic", w_d=0.0, w_s=1.0))
    loss, w = fn(jnp.float32(1e-30), jnp.float32(2.0), 0)
    g_d, g_s = jax.grad(lambda a, b: fn(a, b, 0)[0], argnums=(0, 1))(1e-30, 2.0)
    assert float(loss) == 2.0 and (float(g_d), float(g_s)) == (0.0, 1.0)
    assert (float(w["weight_distill"]), float(w["weight_hard"])) == (0.0, 1.0)


def test_the_gradient_is_the_derivative_of_the_value():
    """The loss is written as its gradient weights times the losses (Eq. 4 is homogeneous
    of degree 1): its value is Eq. 4's and its gradient that value's derivative."""
    l_d, l_s, w_d, w_s, eps = 0.5, 2.0, 13.0, 1.0, 1e-3
    g = jax.grad(joint_losses.weighted_harmonic, argnums=(0, 1))(l_d, l_s, w_d, w_s)
    value = joint_losses.weighted_harmonic(l_d, l_s, w_d, w_s)
    assert float(value) == pytest.approx((w_d + w_s) / (w_d / l_d + w_s / l_s), rel=1e-7)
    np.testing.assert_allclose(float(g[0]) * l_d + float(g[1]) * l_s, value, rtol=1e-6)
    forward = (joint_losses.weighted_harmonic(l_d + eps, l_s, w_d, w_s) - value) / eps
    np.testing.assert_allclose(g[0], forward, rtol=1e-2)


def test_make_joint_loss_arithmetic_and_weights():
    fn = joint_losses.make_joint_loss("arithmetic", alpha=0.25, w_d=13.0)  # unused options ignored
    loss, w = fn(2.0, 4.0, 7)
    assert float(loss) == pytest.approx(2.5)
    assert (float(w["weight_distill"]), float(w["weight_hard"])) == (0.75, 0.25)


def test_make_joint_loss_linear_alpha_follows_step():
    fn = jax.jit(
        joint_losses.make_joint_loss(
            "linear_alpha", alpha_start=0.0, alpha_end=0.5, total_steps=100
        )
    )
    loss, w = fn(2.0, 4.0, 50)
    assert float(w["weight_hard"]) == pytest.approx(0.25)
    assert float(w["weight_distill"]) == pytest.approx(0.75)
    assert float(loss) == pytest.approx(0.75 * 2 + 0.25 * 4)


@pytest.mark.parametrize(
    "kind, options, w_d, w_s",
    [("harmonic", {}, 1.0, 1.0), ("weighted_harmonic", {"w_d": 13.0, "w_s": 1.0}, 13.0, 1.0)],
)
def test_make_joint_loss_harmonic_reports_gradient_weights(kind, options, w_d, w_s):
    fn = joint_losses.make_joint_loss(kind, **options)
    l_d, l_s = 0.4, 3.0
    loss, w = fn(l_d, l_s, 0)
    np.testing.assert_allclose(loss, (w_d + w_s) / (w_d / l_d + w_s / l_s), rtol=1e-6)
    g_d, g_s = jax.grad(lambda a, b: fn(a, b, 0)[0], argnums=(0, 1))(l_d, l_s)
    np.testing.assert_allclose(w["weight_distill"], g_d, rtol=1e-6)
    np.testing.assert_allclose(w["weight_hard"], g_s, rtol=1e-6)
    if kind == "harmonic":  # 2 (1 - alpha)^2 and 2 alpha^2 with Eq. 3's alpha
        alpha = l_d / (l_d + l_s)
        np.testing.assert_allclose(w["weight_distill"], 2 * (1 - alpha) ** 2, rtol=1e-6)
        np.testing.assert_allclose(w["weight_hard"], 2 * alpha**2, rtol=1e-6)


def test_make_joint_loss_hard_only_needs_no_teacher():
    fn = joint_losses.make_joint_loss("hard_only")
    loss, w = fn(None, 1.5, 0)
    assert float(loss) == 1.5
    assert (float(w["weight_distill"]), float(w["weight_hard"])) == (0.0, 1.0)
    from swin_flax.settings import LossSettings

    assert not LossSettings(joint="hard_only").uses_teacher
    assert LossSettings(joint="weighted_harmonic").uses_teacher


def test_make_joint_loss_errors():
    with pytest.raises(
        ValueError,
        match="valid kinds: arithmetic, dynamic_alpha, hard_only, harmonic, linear_alpha, weighted_harmonic",
    ):
        joint_losses.make_joint_loss("geometric")
    with pytest.raises(ValueError, match="needs alpha"):
        joint_losses.make_joint_loss("arithmetic")
    with pytest.raises(ValueError, match="alpha_end, total_steps"):
        joint_losses.make_joint_loss("linear_alpha", alpha_start=0.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        joint_losses.make_joint_loss("arithmetic", alpha=1.5)
    with pytest.raises(ValueError, match="w_d, w_s >= 0"):
        joint_losses.make_joint_loss("weighted_harmonic", w_d=-1.0, w_s=1.0)


def test_dynamic_alpha_weighs_the_hard_loss_by_the_share_of_the_distillation_loss():
    l_d, l_s = 3.0, 1.0
    alpha = l_d / (l_d + l_s)
    assert float(joint_losses.dynamic_alpha(l_d, l_s)) == pytest.approx(
        (1 - alpha) * l_d + alpha * l_s
    )
    g_d, g_s = jax.grad(joint_losses.dynamic_alpha, argnums=(0, 1))(l_d, l_s)
    assert (float(g_d), float(g_s)) == pytest.approx((1 - alpha, alpha))  # alpha held fixed
    loss, weights = joint_losses.make_joint_loss("dynamic_alpha")(l_d, l_s, 0)
    assert float(weights["weight_hard"]) == pytest.approx(alpha)
    assert float(joint_losses.dynamic_alpha(0.0, 0.0)) == 0.0


@pytest.mark.parametrize(
    "kind, options",
    [
        ("weighted_harmonic", {"w_d": 13.0, "w_s": 1.0}),
        ("harmonic", {}),
        ("dynamic_alpha", {}),
        ("arithmetic", {"alpha": 0.0}),
        ("linear_alpha", {"alpha_start": 0.0, "alpha_end": 0.5, "total_steps": 10}),
    ],
)
def test_a_batch_with_nothing_to_distill_trains_on_the_hard_label_loss(kind, options):
    """distill_on leaves no example: L_d = 0, and L = L_s with gradient (0, 1), not L = 0."""
    fn = jax.jit(joint_losses.make_joint_loss(kind, **options))
    loss, w = fn(0.0, 2.5, 0, distilled=jnp.asarray(False))
    assert float(loss) == 2.5
    assert (float(w["weight_distill"]), float(w["weight_hard"])) == (0.0, 1.0)
    grads = jax.grad(lambda a, b: fn(a, b, 0, distilled=jnp.asarray(False))[0], (0, 1))
    assert tuple(float(g) for g in grads(0.0, 2.5)) == (0.0, 1.0)
    # with an example to distill, the joint loss is the kind's own
    assert float(fn(0.5, 2.5, 0, distilled=jnp.asarray(True))[0]) == float(fn(0.5, 2.5, 0)[0])
