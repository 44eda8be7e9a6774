"""The Pallas window-attention kernel (interpreted on CPU) against the model's einsum path:
same outputs and gradients (q, k, v and the relative-position bias table) in float32."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax.model.attention import _einsum_attention, relative_position_index
from swin_flax.model.pallas_attention import window_attention
from swin_flax.model.windows import shifted_window_mask


@pytest.fixture(autouse=True)
def highest_matmul_precision():
    """Float32 comparisons at full matmul precision, in this module's tests only (a
    jax.config.update at import would change every later test of the session)."""
    with jax.default_matmul_precision("highest"):
        yield


def _no_dropout(weights, deterministic):  # what an unbound nn.Dropout(0.0) would return
    return weights


_no_dropout.rate = 0.0


def _inputs(window, heads, head_dim, images=2, windows_per_side=2, seed=0):
    tokens = window * window
    num_windows = windows_per_side**2
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    shape = (images * num_windows, tokens, heads, head_dim)
    q, k, v = (jax.random.normal(key, shape, jnp.float32) for key in keys[:3])
    table = 0.5 * jax.random.normal(keys[3], ((2 * window - 1) ** 2, heads), jnp.float32)
    cotangent = jax.random.normal(keys[4], shape, jnp.float32)
    return q, k, v, table, cotangent


def _attention(impl, window, heads, mask):
    index = relative_position_index(window).reshape(-1)
    tokens = window * window

    def run(q, k, v, table):
        bias = table[index].reshape(tokens, tokens, heads).transpose(2, 0, 1)
        return impl(q, k, v, bias, mask, q.shape[-1] ** -0.5, jnp.float32, _no_dropout, True)

    return run


@pytest.mark.parametrize("window, heads, head_dim", [(7, 3, 32), (4, 2, 24)])
@pytest.mark.parametrize("shifted", [False, True], ids=["no_mask", "shift_mask"])
def test_pallas_attention_matches_einsum_forward_and_gradients(window, heads, head_dim, shifted):
    q, k, v, table, cotangent = _inputs(window, heads, head_dim)
    mask = shifted_window_mask(2 * window, window, window // 2) if shifted else None
    if shifted:
        assert (mask != 0).any()  # the mask really cuts some pairs
    reference = _attention(_einsum_attention, window, heads, mask)
    fused = _attention(window_attention, window, heads, mask)

    expected, expected_vjp = jax.vjp(reference, q, k, v, table)
    got, got_vjp = jax.vjp(jax.jit(fused), q, k, v, table)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for name, g, e in zip("q k v table".split(), got_vjp(cotangent), expected_vjp(cotangent)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


def test_pallas_attention_ignores_padding_and_refuses_dropout():
    q, k, v, table, _ = _inputs(7, 1, 32, images=1, windows_per_side=1)
    bias = jnp.zeros((1, 49, 49))
    out = window_attention(q, k, v, bias, None, 1.0, jnp.float32, _no_dropout, True)
    # Zero bias, scale 1: plain softmax attention over the 49 real tokens only.
    weights = jax.nn.softmax(jnp.einsum("bnhd,bmhd->bhnm", q, k), axis=-1)
    np.testing.assert_allclose(out, jnp.einsum("bhnm,bmhd->bnhd", weights, v), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dropout"):
        window_attention(q, k, v, bias, None, 1.0, jnp.float32, nn.Dropout(0.1), False)


@pytest.mark.slow
def test_the_model_with_pallas_attention_gives_the_einsum_logits():
    import swin_flax

    einsum = swin_flax.create_model("swin_pico", num_classes=10)
    pallas = swin_flax.create_model("swin_pico", num_classes=10, attention="pallas")
    params = swin_flax.init_params(einsum, 0)
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    want = einsum.apply({"params": params}, images)
    got = pallas.apply({"params": params}, images)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
