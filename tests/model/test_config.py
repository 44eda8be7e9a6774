"""The one description of an architecture (`swin_flax.model.config`): its fields are the
model's, it round-trips what checkpoints store, it describes itself and refuses
architectures that cannot run; timm's window rules."""

import dataclasses

import jax.numpy as jnp
import pytest

import swin_flax
from swin_flax.model.config import window_and_shift


def test_image_size_not_divisible_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="img_size 200 must be divisible by .* 32.*192 and 224"):
        swin_flax.create_model("swin_t", img_size=200)
    with pytest.raises(
        ValueError, match="stage 0: feature map 64x64 is not divisible by window_size 7"
    ):
        swin_flax.create_model("swin_t", img_size=256)


def test_window_rules_follow_timm():
    assert window_and_shift(56, 7, shift=True) == (7, 3)
    assert window_and_shift(7, 7, shift=True) == (7, 0)  # one window: never shifted
    assert window_and_shift(2, 4, shift=True) == (2, 0)  # smaller than the window


def test_swin_config_has_the_model_fields_and_defaults():
    from swin_flax.model.config import CONFIG_FIELDS

    model = swin_flax.SwinTransformer()
    assert [f.name for f in dataclasses.fields(swin_flax.SwinConfig)] == list(CONFIG_FIELDS)
    assert model.config == swin_flax.SwinConfig()
    # every architecture field is readable on the module, as the config's own
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
