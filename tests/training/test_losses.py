"""Each loss against numbers computed by hand with numpy; gradients against analytic ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax.errors import UserInputError
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


# ----------------------------------------------------------------------------- config entries


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


def test_the_distillation_mask_keeps_the_examples_the_teacher_gets_right_or_is_sure_of():
    teacher = jnp.array([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0]])
    labels = jnp.array([0, 0, 0])
    assert losses.distillation_mask(teacher, labels, "all") is None
    np.testing.assert_array_equal(
        losses.distillation_mask(teacher, labels, "teacher_correct"), [True, False, True]
    )
    np.testing.assert_array_equal(
        losses.distillation_mask(teacher, labels, "teacher_confident", 0.9), [True, True, False]
    )
    with pytest.raises(UserInputError, match="distill_on must be"):
        losses.distillation_mask(teacher, labels, "somewhere")


def test_soft_targets_are_smoothed_one_hots_and_their_cross_entropy_matches_hard_labels():
    logits = jnp.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    labels = jnp.array([0, 2])
    targets = losses.label_targets(labels, 3, 0.1)
    np.testing.assert_allclose(targets[0], [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3], rtol=1e-6)
    assert float(losses.soft_cross_entropy(logits, targets)) == pytest.approx(
        float(losses.cross_entropy(logits, labels, 0.1)), rel=1e-6
    )


# ----------------------------------------------------------------------------- stage features


def test_the_feature_loss_is_zero_for_the_teachers_own_features_and_positive_otherwise():

    from swin_flax.model.swin import SwinTransformer, init_params
    from swin_flax.weights.keep_blocks import KeptBlocks, transfer_kept
    from tests.helpers import small_swin_t_config

    config = small_swin_t_config()
    teacher = SwinTransformer.from_config(config)
    params = init_params(teacher, 0)
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
    _, teacher_features = teacher.apply({"params": params}, images, return_features=True)
    # A student that keeps every block with the teacher's parameters is the teacher.
    every = KeptBlocks(tuple(tuple(range(d)) for d in config.depths), copy_head=True)
    same = transfer_kept(params, init_params(teacher, 3), every)
    _, same_features = teacher.apply({"params": same}, images, return_features=True)
    weights = (0.0, 0.0, 1.0, 1.0)
    assert float(losses.stage_feature_loss(same_features, teacher_features, weights)) == 0.0
    other = init_params(teacher, 4)
    _, other_features = teacher.apply({"params": other}, images, return_features=True)
    assert float(losses.stage_feature_loss(other_features, teacher_features, weights)) > 0.1
    # Stages weighted 0 are not compared at all.
    assert float(losses.stage_feature_loss(other_features, teacher_features, (0,) * 4)) == 0.0


def test_the_normalised_feature_distance_ignores_each_tokens_scale_and_offset():
    teacher = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))
    assert float(losses.normalized_feature_mse(3.0 * teacher + 1.5, teacher)) < 1e-6
    assert float(losses.normalized_feature_mse(-teacher, teacher)) == pytest.approx(4.0, rel=1e-3)
    with pytest.raises(UserInputError, match="same shape.*projection"):
        losses.normalized_feature_mse(teacher[..., :4], teacher)


def test_projections_exist_only_where_a_weighted_stage_is_narrower_and_map_its_width():
    kernels = losses.feature_projections(
        (64, 128, 256, 512), (128, 256, 512, 1024), (0, 0, 1, 1), jax.random.PRNGKey(0)
    )
    assert {k: v.shape for k, v in kernels.items()} == {
        "stage_2": (256, 512),
        "stage_3": (512, 1024),
    }
    assert losses.feature_projections((96,) * 4, (96,) * 4, (1,) * 4, jax.random.PRNGKey(0)) == {}
    student = {"stage_2": jnp.ones((1, 2, 2, 256)), "stage_3": jnp.ones((1, 1, 1, 512))}
    teacher = {"stage_2": jnp.ones((1, 2, 2, 512)), "stage_3": jnp.ones((1, 1, 1, 1024))}
    value = losses.stage_feature_loss(student, teacher, (0, 0, 1, 1), kernels)
    assert np.isfinite(float(value))
