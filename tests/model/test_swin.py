"""The Swin Transformer (`swin_flax.model.swin`): the shapes of features and logits, a
headless model, bf16 compute, stochastic depth in training only, the shifted-window mask,
and a model built from its config. Parity with timm: tests/weights/test_timm.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swin_flax


def run(model, params, images, **kwargs):
    """Jitted apply: one compilation is much faster than eager op-by-op dispatch on CPU."""
    return jax.jit(functools.partial(model.apply, **kwargs))({"params": params}, images)


def test_wrong_image_shape_names_expected_shape():
    model = swin_flax.create_model("swin_pico", num_classes=3)
    params = swin_flax.init_params(model, 0)
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 32, 32, 3\) \(NHWC\)"):
        model.apply({"params": params}, jnp.zeros((1, 3, 32, 32)))


def test_features_and_logits_shapes():
    model = swin_flax.create_model("swin_pico", num_classes=5)
    params = swin_flax.init_params(model, 0)
    logits, feats = run(model, params, jnp.ones((2, 32, 32, 3)), return_features=True)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert [feats[f"stage_{i}"].shape for i in range(4)] == [
        (2, 16, 16, 32),
        (2, 8, 8, 64),
        (2, 4, 4, 128),
        (2, 2, 2, 256),
    ]
    assert feats["norm"].shape == (2, 2, 2, 256)


def test_headless_model_returns_pooled_features():
    model = swin_flax.create_model("swin_pico", num_classes=0)
    params = swin_flax.init_params(model, 0)
    assert "head" not in params
    assert run(model, params, jnp.ones((1, 32, 32, 3))).shape == (1, 256)


def test_bf16_compute_keeps_float32_params_and_logits():
    model = swin_flax.create_model("swin_pico", num_classes=4, dtype=jnp.bfloat16)
    params = swin_flax.init_params(model, 0)
    assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    out32 = run(
        swin_flax.create_model("swin_pico", num_classes=4), params, jnp.ones((2, 32, 32, 3))
    )
    out16 = run(model, params, jnp.ones((2, 32, 32, 3)))
    assert out16.dtype == jnp.float32
    np.testing.assert_allclose(out16, out32, atol=0.05)


@pytest.mark.slow
def test_drop_path_is_active_only_in_training():
    model = swin_flax.create_model("swin_pico", num_classes=4, drop_path_rate=0.5)
    params = swin_flax.init_params(model, 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    eval_a = run(model, params, x)
    eval_b = run(model, params, x)
    train_a = run(model, params, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(eval_a, train_a)


# --- SwinConfig: the one description of an architecture -------------------------------


def test_model_from_config_keeps_the_model_attributes():
    config = swin_flax.MODEL_PRESETS["swin_m"].replace(num_classes=100)
    model = swin_flax.SwinTransformer.from_config(config, dtype=jnp.bfloat16, attention="xla")
    assert (model.depths, model.embed_dim, model.num_classes) == ((2, 2, 4, 2), 96, 100)
    assert (model.dtype, model.attention) == (jnp.bfloat16, "xla")
    assert model.config == config and hash(model.config) == hash(config)  # frozen, hashable
    shallower = model.clone(config=model.config.replace(depths=(2, 2, 2, 2)))
    assert shallower.config == config.replace(depths=(2, 2, 2, 2))
    assert model == swin_flax.create_model(
        "swin_m", num_classes=100, dtype=jnp.bfloat16, attention="xla"
    )
