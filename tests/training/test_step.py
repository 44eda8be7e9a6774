"""The jitted train and eval steps (`swin_flax.training.step`) on the smallest Swin: what
one step updates and reports, with and without the teacher's logits, and what is refused."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import swin_flax
from swin_flax.data.augment import AugmentConfig, preprocess_eval
from swin_flax.errors import UserInputError
from swin_flax.settings import LossSettings
from swin_flax.training import distributed, losses, step
from tests.helpers import tiny_model

BATCH = 4


def setup(joint="hard_only"):
    """(model, state, train step, data arguments) for one step of `joint` at a fixed lr."""
    model = tiny_model()
    mesh = distributed.make_mesh(jax.devices()[:1])
    tx = optax.sgd(0.1)
    state = step.create_train_state(swin_flax.init_params(model, 0), tx)
    loss = LossSettings(joint=joint)
    train_step = step.make_train_step(
        student=model,
        # A distilling step needs the teacher's architecture; these tests give it stored
        # logits, so the teacher itself never runs.
        teacher=tiny_model() if loss.uses_teacher else None,
        tx=tx,
        schedule=lambda count: jnp.full((), 0.1),
        loss_settings=loss,
        total_steps=10,
        augment=AugmentConfig(out_size=8),
        mesh=mesh,
    )
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (6, 8, 8, 3)).astype(np.uint8))
    labels = jnp.asarray(np.array([0, 1, 2, 0, 1, 2], np.int32))
    data = (images[:BATCH], labels[:BATCH], jax.random.PRNGKey(0))  # the step's uint8 batch
    return model, state, train_step, data


def test_a_fresh_state_is_at_step_zero_with_the_optimizer_state_of_its_params():
    params = {"w": jnp.ones(3)}
    state = step.create_train_state(params, optax.adam(1e-3))
    assert int(state.step) == 0 and state.params is params
    assert jax.tree_util.tree_structure(state.opt_state) == jax.tree_util.tree_structure(
        optax.adam(1e-3).init(params)
    )


def test_a_hard_label_step_updates_the_params_and_reports_its_metrics():
    _, state, train_step, data = setup()
    before = jax.tree_util.tree_map(np.asarray, state.params)
    new_state, metrics, teacher_out = train_step(state, None, *data)
    assert int(new_state.step) == 1 and teacher_out is None
    assert set(metrics) == {"loss", "loss_hard", "accuracy", "learning_rate", "grad_norm"}
    assert float(metrics["loss"]) == float(metrics["loss_hard"]) > 0
    assert float(metrics["learning_rate"]) == pytest.approx(0.1)
    assert float(metrics["grad_norm"]) > 0 and 0.0 <= float(metrics["accuracy"]) <= 1.0
    after = jax.tree_util.tree_map(np.asarray, new_state.params)
    leaves = zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after))
    assert any(not np.array_equal(a, b) for a, b in leaves)


@pytest.mark.slow  # a second compilation of the step, with the teacher's input
def test_stored_teacher_logits_enter_the_distillation_loss_as_given():
    _, state, train_step, data = setup(joint="weighted_harmonic")
    stored = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, 3)), jnp.bfloat16)
    _, metrics, teacher_out = train_step(state, {"logits": stored}, *data)
    np.testing.assert_array_equal(np.asarray(teacher_out), np.asarray(stored, np.float32))
    assert teacher_out.dtype == jnp.float32
    assert {"loss_distill", "loss_hard"} <= set(metrics)
    assert float(metrics["loss"]) != float(metrics["loss_hard"])  # the teacher counts


def test_a_distillation_loss_without_a_teacher_and_an_unknown_teacher_input_are_refused():
    with pytest.raises(UserInputError, match="'weighted_harmonic' needs a teacher model"):
        step.make_train_step(
            student=tiny_model(),
            teacher=None,
            tx=optax.sgd(0.1),
            schedule=lambda count: 0.1,
            loss_settings=LossSettings(joint="weighted_harmonic"),
            total_steps=10,
            augment=AugmentConfig(out_size=8),
            mesh=distributed.make_mesh(),
        )
    _, state, train_step, data = setup()
    with pytest.raises(ValueError, match=r"teacher_input must be .*got \['teacher'\]"):
        train_step(state, {"teacher": None}, *data)


def test_the_eval_step_counts_only_the_unmasked_examples():
    model = tiny_model()
    params = swin_flax.init_params(model, 0)
    mesh = distributed.make_mesh(jax.devices()[:1])
    eval_step = step.make_eval_step(model, image_size=8, mesh=mesh)
    images = jnp.asarray(np.random.default_rng(2).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8))
    predict = step.make_predict_fn(model)
    predicted = np.argmax(np.asarray(predict(params, preprocess_eval(images, out_size=8))), -1)
    labels = jnp.asarray(predicted.astype(np.int32))  # every example right ...
    mask = jnp.asarray([True, True, True, False])  # ... but the last is padding
    correct, count = eval_step(params, images, labels, mask)
    assert (int(correct), int(count)) == (3, 3)
    wrong = jnp.asarray(((predicted + 1) % 3).astype(np.int32))
    assert int(eval_step(params, images, wrong, mask)[0]) == 0


def make_step(loss: LossSettings, *, augment=None, ema_decay=0.0):
    model = tiny_model()
    tx = optax.sgd(0.1)
    train_step = step.make_train_step(
        student=model,
        teacher=tiny_model() if loss.uses_teacher else None,
        tx=tx,
        schedule=lambda count: jnp.full((), 0.1),
        loss_settings=loss,
        total_steps=10,
        augment=augment or AugmentConfig(out_size=8),
        mesh=distributed.make_mesh(jax.devices()[:1]),
        ema_decay=ema_decay,
    )
    state = step.create_train_state(swin_flax.init_params(model, 0), tx, ema=ema_decay > 0)
    return state, train_step


def test_the_ema_follows_the_params_with_a_warmed_up_decay():
    _, _, _, data = setup()
    state, train_step = make_step(LossSettings(joint="hard_only"), ema_decay=0.999)
    start = jax.tree_util.tree_map(np.asarray, state.params)
    new, _, _ = train_step(state, None, *data)
    d = min(0.999, 1 / 10)  # step 0: (1 + 0) / (10 + 0)
    for e, p0, p1 in zip(
        jax.tree_util.tree_leaves(new.ema_params),
        jax.tree_util.tree_leaves(start),
        jax.tree_util.tree_leaves(new.params),
    ):
        np.testing.assert_allclose(np.asarray(e), d * p0 + (1 - d) * np.asarray(p1), rtol=1e-5)
    assert float(step.ema_decay_at(jnp.asarray(10_000), 0.999)) == pytest.approx(0.999)


def test_distilling_only_where_the_teacher_is_right_ignores_its_mistakes():
    """Teacher logits that are wrong for every example: L_d averages over none, so it is 0."""
    _, _, _, data = setup()
    labels = data[1][:BATCH]
    wrong = jax.nn.one_hot((labels + 1) % 3, 3) * 10.0
    losses_by = {}
    for where in ("all", "teacher_correct"):
        loss = LossSettings(joint="arithmetic", alpha=0.5, distill_on=where)
        state, train_step = make_step(loss)
        _, metrics, _ = train_step(state, {"logits": wrong}, *data)
        losses_by[where] = float(metrics["loss_distill"])
    assert losses_by["all"] > 1.0 and losses_by["teacher_correct"] == 0.0


def test_a_mixed_batch_trains_on_mixed_targets():
    _, _, _, data = setup()
    plain, plain_step = make_step(LossSettings(joint="hard_only"))
    mixed, mixed_step = make_step(
        LossSettings(joint="hard_only"), augment=AugmentConfig(out_size=8, mixup_alpha=0.8)
    )
    _, m_plain, _ = plain_step(plain, None, *data)
    _, m_mixed, _ = mixed_step(mixed, None, *data)
    assert np.isfinite(float(m_mixed["loss"]))
    assert float(m_mixed["loss"]) != pytest.approx(float(m_plain["loss"]))


def test_a_batch_where_no_example_is_confident_enough_trains_as_hard_labels_do():
    """teacher_confident with a threshold above every teacher probability: the default joint
    loss (weighted_harmonic) falls back to L_s, so the step's gradient is the hard-label one."""
    _, _, _, data = setup()
    teacher = {"logits": jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, 3)))}
    loss = LossSettings(joint="weighted_harmonic", distill_on="teacher_confident", confidence=1.0)
    state, train_step = make_step(loss)
    distilled, metrics, _ = train_step(state, teacher, *data)
    state, hard_step = make_step(LossSettings(joint="hard_only"))
    hard, hard_metrics, _ = hard_step(state, None, *data)
    assert float(metrics["loss_distill"]) == 0.0
    assert float(metrics["loss"]) == float(hard_metrics["loss"]) > 0
    assert float(metrics["grad_norm"]) == pytest.approx(float(hard_metrics["grad_norm"]))
    assert float(metrics["grad_norm"]) > 0
    for a, b in zip(
        jax.tree_util.tree_leaves(distilled.params), jax.tree_util.tree_leaves(hard.params)
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # two compilations with the live teacher's features
def test_stage_features_of_the_teacher_itself_add_nothing_and_a_projection_learns():
    """The live teacher's stage outputs against the student's: 0 when the student is the
    teacher (its parameters too); where the widths differ, the learned projection (beside
    the model's parameters) is updated by the step."""
    _, _, _, data = setup()
    model = tiny_model()
    params = swin_flax.init_params(model, 0)
    weights = (1.0,)  # tiny_model has one stage
    loss = LossSettings(joint="arithmetic", alpha=0.5)

    def run(student, student_params):
        tx = optax.sgd(0.1)
        train_step = step.make_train_step(
            student=student,
            teacher=model,
            tx=tx,
            schedule=lambda count: jnp.full((), 0.1),
            loss_settings=loss,
            total_steps=10,
            augment=AugmentConfig(out_size=8, crop_padding=0, flip=False),
            mesh=distributed.make_mesh(jax.devices()[:1]),
            feature_weights=weights,
        )
        state = step.create_train_state(student_params, tx)
        teacher_input = {"params": jax.tree_util.tree_map(jnp.array, params)}
        return train_step(state, teacher_input, *data)

    same = jax.tree_util.tree_map(jnp.array, params)
    _, metrics, _ = run(model, same)
    assert float(metrics["loss_features"]) < 1e-6  # 0 up to float rounding in two programs
    narrow = swin_flax.SwinTransformer.from_config(dataclasses.replace(model.config, embed_dim=4))
    projections = losses.feature_projections(
        narrow.stage_dims, model.stage_dims, weights, jax.random.PRNGKey(0)
    )
    start = {**swin_flax.init_params(narrow, 1), step.FEATURE_PROJECTIONS: projections}
    kernel = np.asarray(projections["stage_0"])
    new_state, metrics, _ = run(narrow, jax.tree_util.tree_map(jnp.array, start))
    assert float(metrics["loss_features"]) > 0.0
    learned = np.asarray(new_state.params[step.FEATURE_PROJECTIONS]["stage_0"])
    assert learned.shape == kernel.shape and not np.array_equal(learned, kernel)
    assert step.FEATURE_PROJECTIONS not in step.model_params(new_state.params)
