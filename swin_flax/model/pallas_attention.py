"""Fused window attention in Pallas: q@k^T, relative-position bias, shifted-window mask,
float32 softmax and @v in one kernel, so the (heads x N x N) logits and weights of a window
never go through device memory (issue 13).

`window_attention` has the signature of `swin_flax.model.swin._einsum_attention` and gives the
same numbers in float32. One kernel instance handles one (window, head) pair; the window's
N tokens (49 for window 7) are padded to a power of two (64), as Triton needs, and the
padded keys get a -1e30 logit so they take no weight. The backward pass is a custom_vjp
that recomputes the attention with the einsum formulation (XLA), so gradients are those of
the einsum path; only the forward is fused.

On a machine without a GPU the kernel runs in Pallas' interpreter (`interpret=True`, the
default on CPU): correct, slow, for tests.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

PAD_LOGIT = -1e30  # logit of a padded key: exp() of it is exactly 0 after max-subtraction


def _padded(size: int, minimum: int = 16) -> int:
    """Next power of two >= size (Triton block shapes are powers of two, dots >= 16)."""
    return max(minimum, 1 << (size - 1).bit_length())


def _kernel(q_ref, k_ref, v_ref, bias_ref, o_ref, *, scale, weights_dtype):
    q = q_ref[...] * jnp.asarray(scale, q_ref.dtype)  # (Np, Dp), scaled in the compute dtype
    logits = jax.lax.dot_general(
        q,
        k_ref[...],
        (((1,), (1,)), ((), ())),  # q @ k^T
        preferred_element_type=jnp.float32,
    )  # (Np, Np)
    logits = logits + bias_ref[...]
    logits = logits - jnp.max(logits, axis=-1, keepdims=True)
    weights = jnp.exp(logits)
    weights = (weights / jnp.sum(weights, axis=-1, keepdims=True)).astype(weights_dtype)
    o_ref[...] = jnp.dot(weights, v_ref[...], preferred_element_type=jnp.float32).astype(
        o_ref.dtype
    )


def _forward(q, k, v, full_bias, scale, weights_dtype, interpret):
    """q, k, v: (W, N, H, D); full_bias: (nW, H, N, N) float32 (bias + mask), W % nW == 0."""
    windows, tokens, heads, head_dim = q.shape
    num_windows = full_bias.shape[0]
    n_pad, d_pad = _padded(tokens), _padded(head_dim)
    pad_tokens = [(0, 0), (0, n_pad - tokens), (0, 0), (0, d_pad - head_dim)]
    q, k, v = (jnp.pad(t, pad_tokens) for t in (q, k, v))
    # Padded key columns: -1e30; padded query rows are computed and sliced off.
    full_bias = jnp.pad(
        full_bias.astype(jnp.float32), [(0, 0), (0, 0), (0, n_pad - tokens), (0, 0)]
    )
    full_bias = jnp.pad(
        full_bias, [(0, 0), (0, 0), (0, 0), (0, n_pad - tokens)], constant_values=PAD_LOGIT
    )
    qkv_spec = pl.BlockSpec((None, n_pad, None, d_pad), lambda w, h: (w, 0, h, 0))
    bias_spec = pl.BlockSpec((None, None, n_pad, n_pad), lambda w, h: (w % num_windows, h, 0, 0))
    out = pl.pallas_call(
        functools.partial(_kernel, scale=scale, weights_dtype=weights_dtype),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        grid=(windows, heads),
        in_specs=[qkv_spec, qkv_spec, qkv_spec, bias_spec],
        out_specs=qkv_spec,
        interpret=interpret,
        name="swin_window_attention",
    )(q, k, v, full_bias)
    return out[:, :tokens, :, :head_dim]


def reference_attention(q, k, v, full_bias, scale, weights_dtype):
    """The einsum formulation of model.py with bias and mask already summed: the backward pass
    of the kernel, and what it is tested against."""
    windows, tokens, heads, _ = q.shape
    num_windows = full_bias.shape[0]
    logits = jnp.einsum("bnhd,bmhd->bhnm", q * scale, k).astype(jnp.float32)
    logits = logits.reshape(-1, num_windows, heads, tokens, tokens) + full_bias[None]
    weights = jax.nn.softmax(logits, axis=-1).astype(weights_dtype)
    return jnp.einsum("bhnm,bmhd->bnhd", weights.reshape(windows, heads, tokens, tokens), v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def fused_attention(q, k, v, full_bias, scale, weights_dtype, interpret):
    return _forward(q, k, v, full_bias, scale, weights_dtype, interpret)


def _fused_fwd(q, k, v, full_bias, scale, weights_dtype, interpret):
    out = _forward(q, k, v, full_bias, scale, weights_dtype, interpret)
    return out, (q, k, v, full_bias)


def _fused_bwd(scale, weights_dtype, interpret, residuals, grad):
    del interpret
    _, vjp = jax.vjp(
        functools.partial(reference_attention, scale=scale, weights_dtype=weights_dtype), *residuals
    )
    return vjp(grad)


fused_attention.defvjp(_fused_fwd, _fused_bwd)


def window_attention(
    q, k, v, bias, mask, scale, dtype, dropout, deterministic, *, interpret: bool | None = None
):
    """Drop-in for `model._einsum_attention`: q, k, v (B*nW, N, H, D), bias (H, N, N), mask
    (nW, N, N) or None, attention weights cast to `dtype` before @v. Attention dropout is not
    fused: a non-zero rate in training is an error (use attention='einsum' for it).
    `interpret`: run the kernel in Pallas' interpreter; default on CPU only."""
    if not deterministic and getattr(dropout, "rate", 0.0) > 0.0:
        raise ValueError(
            "attention='pallas' has no attention dropout; set attn_drop_rate=0 "
            "or use attention='einsum'"
        )
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    full_bias = bias[None].astype(jnp.float32)
    if mask is not None:
        full_bias = full_bias + jnp.asarray(mask, jnp.float32)[:, None]
    return fused_attention(q, k, v, full_bias, float(scale), jnp.dtype(dtype), bool(interpret))
