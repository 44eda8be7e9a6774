"""Each loss against numbers computed by hand with numpy; gradients against analytic ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax.training import losses

LOGITS = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], np.float32)
TEACHER = np.array([[0.0, 2.5, 2.0], [1.0, -0.5, 0.5]], np.float32)
LABELS = np.array([2, 0])


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------- per-batch losses


def test_cross_entropy_matches_hand_computation():
    log_p = _log_softmax(LOGITS)
    expected = -(log_p[0, 2] + log_p[1, 0]) / 2
    np.testing.assert_allclose(losses.cross_entropy(LOGITS, LABELS), expected, rtol=1e-6)


def test_cross_entropy_label_smoothing():
    eps = 0.1
    log_p = _log_softmax(LOGITS)
    targets = np.full((2, 3), eps / 3)
    targets[0, 2] += 1 - eps
    targets[1, 0] += 1 - eps
    expected = -(targets * log_p).sum(-1).mean()
    got = losses.cross_entropy(LOGITS, LABELS, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert abs(float(got) - float(losses.cross_entropy(LOGITS, LABELS))) > 1e-3


def test_cross_entropy_mask_ignores_padded_examples_even_if_nan():
    log_p = _log_softmax(LOGITS)
    logits = np.concatenate([LOGITS, np.full((1, 3), np.nan, np.float32)])
    labels = np.array([2, 0, 1])
    mask = np.array([False, True, False])
    np.testing.assert_allclose(
        losses.cross_entropy(logits, labels, mask=mask), -log_p[1, 0], rtol=1e-6
    )
    assert float(losses.cross_entropy(logits, labels, mask=np.zeros(3, bool))) == 0.0


def test_cross_entropy_rejects_bad_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.cross_entropy(LOGITS, LABELS, label_smoothing=1.0)


def test_mse_logits_is_elementwise_mean():
    expected = np.mean((LOGITS.astype(np.float64) - TEACHER) ** 2)
    np.testing.assert_allclose(losses.mse_logits(LOGITS, TEACHER), expected, rtol=1e-6)
    # mask: mean over the valid example's elements only
    np.testing.assert_allclose(
        losses.mse_logits(LOGITS, TEACHER, mask=np.array([True, False])),
        np.mean((LOGITS[0].astype(np.float64) - TEACHER[0]) ** 2),
        rtol=1e-6,
    )


def test_mse_gradient_reaches_student_only():
    g_s, g_t = jax.grad(losses.mse_logits, argnums=(0, 1))(
        jnp.asarray(LOGITS), jnp.asarray(TEACHER)
    )
    np.testing.assert_allclose(g_s, 2 * (LOGITS - TEACHER) / LOGITS.size, rtol=1e-6)
    np.testing.assert_array_equal(g_t, np.zeros_like(TEACHER))


def test_kl_divergence_matches_hand_computation():
    tau = 2.0
    log_q = _log_softmax(LOGITS / tau)
    log_p = _log_softmax(TEACHER / tau)
    expected = tau**2 * (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
    np.testing.assert_allclose(losses.kl_divergence(LOGITS, TEACHER, tau), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.kl_divergence(TEACHER, TEACHER, tau), 0.0, atol=1e-7)


def test_kl_gradient_is_tau_times_softmax_difference():
    # d/ds [tau^2 * mean_b KL] = tau * (softmax(s/tau) - softmax(t/tau)) / batch
    tau = 3.0
    g_s, g_t = jax.grad(losses.kl_divergence, argnums=(0, 1))(
        jnp.asarray(LOGITS), jnp.asarray(TEACHER), tau
    )
    expected = tau * (np.exp(_log_softmax(LOGITS / tau)) - np.exp(_log_softmax(TEACHER / tau))) / 2
    np.testing.assert_allclose(g_s, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(g_t, np.zeros_like(TEACHER))


def test_kl_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        losses.kl_divergence(LOGITS, TEACHER, 0.0)


# ----------------------------------------------------------------------------- joint losses


def test_arithmetic_value_and_gradient():
    assert float(losses.arithmetic(2.0, 4.0, 0.25)) == pytest.approx(0.75 * 2 + 0.25 * 4)
    g = jax.grad(losses.arithmetic, argnums=(0, 1))(2.0, 4.0, 0.25)
    assert (float(g[0]), float(g[1])) == (0.75, 0.25)


@pytest.mark.parametrize(
    "step, expected", [(-5, 0.0), (0, 0.0), (25, 0.125), (50, 0.25), (100, 0.5), (150, 0.5)]
)
def test_linear_alpha(step, expected):
    assert float(losses.linear_alpha(step, 100, 0.0, 0.5)) == pytest.approx(expected)


def test_linear_alpha_decreasing_and_traced():
    fn = jax.jit(lambda s: losses.linear_alpha(s, 10, 1.0, 0.5))
    assert float(fn(jnp.asarray(4))) == pytest.approx(0.8)


def test_harmonic_values():
    assert float(losses.harmonic(1.0, 3.0)) == pytest.approx(2 / (1 / 1 + 1 / 3))
    assert float(losses.weighted_harmonic(0.5, 4.0, 13.0, 1.0)) == pytest.approx(
        14 / (13 / 0.5 + 1 / 4.0)
    )


@pytest.mark.parametrize("l_d, l_s", [(0.3, 4.2), (2.0, 2.0), (5.0, 0.01)])
def test_harmonic_equals_arithmetic_with_eq3_alpha(l_d, l_s):
    alpha = l_d / (l_d + l_s)  # paper Eq. 3
    np.testing.assert_allclose(
        losses.harmonic(l_d, l_s), losses.arithmetic(l_d, l_s, alpha), rtol=1e-6
    )


@pytest.mark.parametrize(
    "l_d, l_s, w_d, w_s", [(0.5, 4.0, 13.0, 1.0), (2.0, 0.1, 1.0, 1.0), (1e-3, 3.0, 2.0, 5.0)]
)
def test_weighted_harmonic_gradients_are_analytic(l_d, l_s, w_d, w_s):
    h = w_d / l_d + w_s / l_s
    g = jax.grad(losses.weighted_harmonic, argnums=(0, 1, 2, 3))(l_d, l_s, w_d, w_s)
    np.testing.assert_allclose(g[0], (w_d + w_s) * w_d / l_d**2 / h**2, rtol=1e-5)
    np.testing.assert_allclose(g[1], (w_d + w_s) * w_s / l_s**2 / h**2, rtol=1e-5)
    # weights too (w.r.t. w: 1/h - (w_d + w_s) / (l * h^2))
    np.testing.assert_allclose(g[2], 1 / h - (w_d + w_s) / (l_d * h**2), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g[3], 1 / h - (w_d + w_s) / (l_s * h**2), rtol=1e-4, atol=1e-7)


def test_harmonic_is_safe_at_zero_and_tiny_losses():
    grad = jax.grad(losses.weighted_harmonic, argnums=(0, 1))
    # one loss exactly 0: value 0, gradient (W/w_d, 0) i.e. only the zero loss matters
    assert float(losses.weighted_harmonic(0.0, 2.0, 3.0, 1.0)) == 0.0
    np.testing.assert_allclose(grad(0.0, 2.0, 3.0, 1.0), (4.0 / 3.0, 0.0), rtol=1e-6)
    # both 0: value 0, finite gradient (the l_d = l_s limit, w / (w_d + w_s))
    assert float(losses.weighted_harmonic(0.0, 0.0, 3.0, 1.0)) == 0.0
    np.testing.assert_allclose(grad(0.0, 0.0, 3.0, 1.0), (0.75, 0.25), rtol=1e-6)
    # tiny losses (1/l^2 would overflow float32): still the exact values
    np.testing.assert_allclose(losses.harmonic(1e-30, 3e-30), 1.5e-30, rtol=1e-5)
    np.testing.assert_allclose(grad(1e-30, 3e-30, 1.0, 1.0), (2 * 0.75**2, 2 * 0.25**2), rtol=1e-5)


def test_harmonic_is_exact_at_normal_magnitudes():
    l_d, l_s = np.float32(0.37), np.float32(2.9)
    reference = np.float32(2) / (np.float32(1) / l_d + np.float32(1) / l_s)
    np.testing.assert_allclose(losses.harmonic(l_d, l_s), reference, rtol=2e-7)


# ----------------------------------------------------------------------------- config entries


def test_make_joint_loss_arithmetic_and_weights():
    fn = losses.make_joint_loss("arithmetic", alpha=0.25, w_d=13.0)  # unused options ignored
    loss, w = fn(2.0, 4.0, 7)
    assert float(loss) == pytest.approx(2.5)
    assert (float(w["weight_distill"]), float(w["weight_hard"])) == (0.75, 0.25)


def test_make_joint_loss_linear_alpha_follows_step():
    fn = jax.jit(
        losses.make_joint_loss("linear_alpha", alpha_start=0.0, alpha_end=0.5, total_steps=100)
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
    fn = losses.make_joint_loss(kind, **options)
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
    fn = losses.make_joint_loss("hard_only")
    loss, w = fn(None, 1.5, 0)
    assert float(loss) == 1.5
    assert (float(w["weight_distill"]), float(w["weight_hard"])) == (0.0, 1.0)
    from swin_flax.settings import LossSettings

    assert not LossSettings(joint="hard_only").uses_teacher
    assert LossSettings(joint="weighted_harmonic").uses_teacher


def test_make_joint_loss_errors():
    with pytest.raises(
        ValueError,
        match="valid kinds: arithmetic, hard_only, harmonic, linear_alpha, weighted_harmonic",
    ):
        losses.make_joint_loss("geometric")
    with pytest.raises(ValueError, match="needs alpha"):
        losses.make_joint_loss("arithmetic")
    with pytest.raises(ValueError, match="alpha_end, total_steps"):
        losses.make_joint_loss("linear_alpha", alpha_start=0.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        losses.make_joint_loss("arithmetic", alpha=1.5)
    with pytest.raises(ValueError, match="w_d, w_s >= 0"):
        losses.make_joint_loss("weighted_harmonic", w_d=-1.0, w_s=1.0)


def test_make_distillation_loss():
    np.testing.assert_allclose(
        losses.make_distillation_loss("mse")(LOGITS, TEACHER), losses.mse_logits(LOGITS, TEACHER)
    )
    np.testing.assert_allclose(
        losses.make_distillation_loss("kl", temperature=4.0)(LOGITS, TEACHER),
        losses.kl_divergence(LOGITS, TEACHER, 4.0),
    )
    with pytest.raises(ValueError, match="temperature > 0"):
        losses.make_distillation_loss("kl")
    with pytest.raises(ValueError, match="valid kinds: kl, mse"):
        losses.make_distillation_loss("cosine")
