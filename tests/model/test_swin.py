"""Model-level behaviour that needs no reference implementation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swin_flax
from swin_flax.model.attention import relative_position_index
from swin_flax.model.config import window_and_shift
from swin_flax.model.swin import shifted_window_mask

# The paper's Table X (100 classes), in millions, and the exact timm counts.
PAPER_PARAMS_100 = {
    "swin_n": (20.5, 20_490_286),
    "swin_m": (24.0, 24_043_270),
    "swin_t": (27.6, 27_596_254),
    "swin_s": (48.9, 48_914_158),
    "swin_b": (86.9, 86_845_724),
}


def run(model, params, images, **kwargs):
    """Jitted apply: one compilation is much faster than eager op-by-op dispatch on CPU."""
    return jax.jit(functools.partial(model.apply, **kwargs))({"params": params}, images)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_100))
def test_parameter_counts_match_paper_table_x(name):
    model = swin_flax.create_model(name, num_classes=100)
    count = swin_flax.count_params(swin_flax.abstract_params(model))
    paper_millions, exact = PAPER_PARAMS_100[name]
    assert count == exact
    # The paper rounds to 0.1M (Swin-B's 86.846M appears as 86.9M: 86.85 rounded half up).
    assert abs(count / 1e6 - paper_millions) <= 0.055


def test_timm_names_are_aliases():
    model = swin_flax.create_model("swin_base_patch4_window12_384.ms_in1k")
    assert (model.img_size, model.window_size, model.embed_dim) == (384, 12, 128)


def test_unknown_name_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model name 'swin_x'"):
        swin_flax.create_model("swin_x")
    with pytest.raises(TypeError, match="unknown model options \\['depth'\\]"):
        swin_flax.create_model("swin_t", depth=(2, 2, 2, 2))


def test_image_size_not_divisible_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="img_size 200 must be divisible by .* 32.*192 and 224"):
        swin_flax.create_model("swin_t", img_size=200)
    with pytest.raises(
        ValueError, match="stage 0: feature map 64x64 is not divisible by window_size 7"
    ):
        swin_flax.create_model("swin_t", img_size=256)


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


def test_drop_path_is_active_only_in_training():
    model = swin_flax.create_model("swin_pico", num_classes=4, drop_path_rate=0.5)
    params = swin_flax.init_params(model, 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    eval_a = run(model, params, x)
    eval_b = run(model, params, x)
    train_a = run(model, params, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(eval_a, train_a)


def test_window_rules_follow_timm():
    assert window_and_shift(56, 7, shift=True) == (7, 3)
    assert window_and_shift(7, 7, shift=True) == (7, 0)  # one window: never shifted
    assert window_and_shift(2, 4, shift=True) == (2, 0)  # smaller than the window


def test_relative_position_index_corners():
    index = relative_position_index(2)
    # tokens (0,0),(0,1),(1,0),(1,1); offset (dy+1)*3 + (dx+1)
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_shifted_window_mask_separates_regions():
    mask = shifted_window_mask(resolution=4, window_size=2, shift_size=1)
    assert mask.shape == (4, 4, 4)
    assert np.all(mask[0] == 0)  # the top-left window holds one region only
    # the bottom-right window holds four regions: only the diagonal is unmasked
    np.testing.assert_array_equal(mask[3] == 0, np.eye(4, dtype=bool))
    assert set(np.unique(mask)) == {0.0, -100.0}


# --- SwinConfig: the one description of an architecture -------------------------------


def test_swin_config_has_the_model_fields_and_defaults():
    from swin_flax.model.config import CONFIG_FIELDS

    model = swin_flax.SwinTransformer()
    assert [f.name for f in dataclasses.fields(swin_flax.SwinConfig)] == list(CONFIG_FIELDS)
    assert model.config == swin_flax.SwinConfig()  # the two field lists cannot drift apart
    assert {f: getattr(model, f) for f in CONFIG_FIELDS} == dataclasses.asdict(model.config)


def test_swin_config_round_trips_the_stored_model_config():
    # What checkpoints have always stored: model_config(model), lists for the tuples.
    stored = {
        "img_size": 32,
        "patch_size": 2,
        "in_chans": 3,
        "embed_dim": 32,
        "depths": [2, 2, 4, 2],
        "num_heads": [1, 2, 4, 8],
        "window_size": 4,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "drop_rate": 0.0,
        "attn_drop_rate": 0.0,
        "drop_path_rate": 0.0,
        "num_classes": 10,
    }
    config = swin_flax.SwinConfig.from_dict(stored)
    assert config == swin_flax.preset_config("swin_pico").replace(num_classes=10)
    assert config.to_dict() == stored
    model = swin_flax.create_model("swin_pico", num_classes=10)
    assert swin_flax.model_config(model) == stored
    assert swin_flax.model_from_config(stored) == model
    assert swin_flax.model_from_config(stored, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=r"unknown Swin config keys \['depth'\]"):
        swin_flax.SwinConfig.from_dict(dict(stored, depth=[2]))


def test_model_from_config_keeps_the_model_attributes():
    config = swin_flax.MODEL_PRESETS["swin_m"].replace(num_classes=100)
    model = swin_flax.SwinTransformer.from_config(config, dtype=jnp.bfloat16, attention="xla")
    assert (model.depths, model.embed_dim, model.num_classes) == ((2, 2, 4, 2), 96, 100)
    assert (model.dtype, model.attention) == (jnp.bfloat16, "xla")
    assert model.config == config and hash(model.config) == hash(config)  # frozen, hashable
    assert model.clone(depths=(2, 2, 2, 2)).config == config.replace(depths=(2, 2, 2, 2))
    assert model == swin_flax.create_model(
        "swin_m", num_classes=100, dtype=jnp.bfloat16, attention="xla"
    )


def test_swin_config_describes_and_validates():
    assert swin_flax.preset_config("swin_m").replace(num_classes=100).describe() == (
        "Swin depths (2, 2, 4, 2), embed 96, window 7, 224 px, 100 classes"
    )
    assert swin_flax.preset_config("swin_pico").replace(num_classes=0).describe() == (
        "Swin depths (2, 2, 4, 2), embed 32, window 4, patch 2, 32 px, no head"
    )
    odd = swin_flax.SwinConfig(
        embed_dim=24,
        depths=(2, 2, 3, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        img_size=128,
        num_classes=10,
    )
    assert "heads (1, 2, 4, 8)" in odd.describe()
    with pytest.raises(ValueError, match="img_size 200 must be divisible by .* 32.*192 and 224"):
        swin_flax.SwinConfig(img_size=200)
    with pytest.raises(ValueError, match="stage 0: feature map 64x64 is not divisible"):
        swin_flax.preset_config("swin_t").replace(img_size=256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        swin_flax.SwinConfig().depths = (2, 2, 2, 2)
