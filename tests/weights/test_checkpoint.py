"""swin_flax checkpoints (`swin_flax.weights.checkpoint`): the model's config and class
names stored beside the parameters, a dtype changed on load, and every refusal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swin_flax
from swin_flax.errors import CheckpointError
from swin_flax.weights import checkpoint, layouts
from swin_flax.weights import timm as C
from swin_flax.weights.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers import assert_trees_equal, pico_state, tiny_model
from tests.weights import parity_report as parity


@pytest.mark.torch
def test_checkpoint_roundtrip_with_dtype_override(timm_models, tmp_path):
    state = pico_state(timm_models)
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(state))
    params = C.timm_to_flax(state, model)
    save_checkpoint(tmp_path / "ckpt", model, params)
    loaded_model, loaded = swin_flax.load_checkpoint(tmp_path / "ckpt", dtype=jnp.bfloat16)
    assert loaded_model.dtype == jnp.bfloat16
    assert swin_flax.model_config(loaded_model) == swin_flax.model_config(model)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        assert b.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="change the parameter shapes"):
        load_checkpoint(tmp_path / "ckpt", num_classes=3)
    with pytest.raises(CheckpointError, match="already exists.*--overwrite"):
        save_checkpoint(tmp_path / "ckpt", model, params)
    save_checkpoint(tmp_path / "ckpt", model, params, overwrite=True)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a swin_flax checkpoint.*'params'"):
        load_checkpoint(tmp_path / "notes")
    model = swin_flax.SwinTransformer(**parity.CONFIGS["pico_32"])
    params = jax.tree_util.tree_map(
        lambda x: jnp.zeros(x.shape, x.dtype), swin_flax.abstract_params(model)
    )
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "notes", model, params, overwrite=True)
    assert (tmp_path / "notes" / "a.txt").exists()
    other = swin_flax.SwinTransformer(**dict(parity.CONFIGS["pico_32"], num_classes=3))
    with pytest.raises(CheckpointError, match="params do not match the model"):
        save_checkpoint(tmp_path / "bad", other, params)


def test_class_names_and_the_model_config_are_stored_beside_the_params(tmp_path):
    model = tiny_model(num_classes=2)
    params = swin_flax.init_params(model, 0)
    assert not checkpoint.is_checkpoint(tmp_path / "ckpt")
    save_checkpoint(tmp_path / "ckpt", model, params, class_names=["cat", "dog"])
    assert checkpoint.is_checkpoint(tmp_path / "ckpt")
    assert checkpoint.load_class_names(tmp_path / "ckpt") == ["cat", "dog"]
    assert checkpoint.load_model_config(tmp_path / "ckpt") == swin_flax.model_config(model)
    loaded_model, loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded_model == model
    assert_trees_equal(params, loaded)
    save_checkpoint(tmp_path / "plain", model, params)
    assert checkpoint.load_class_names(tmp_path / "plain") is None
