"""Window attention with a learned relative position bias, and how it is computed."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# How window attention is computed (the run option `attention` in swin_flax/settings.py
# imports these names); all give the same numbers in float32.
ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn", "pallas")


def dense_init():
    return nn.initializers.truncated_normal(stddev=0.02)


def relative_position_index(window_size: int) -> np.ndarray:
    """(N, N) index into the (2w-1)^2 bias table for every pair of tokens of a window."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij"))
    coords = coords.reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    relative = relative + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self attention inside windows with a learned relative position bias."""

    num_heads: int
    window_size: int
    qkv_bias: bool = True
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    dtype: Any = jnp.float32
    implementation: str = "einsum"  # einsum | xla | cudnn | pallas (see ATTENTION_IMPLEMENTATIONS)

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray | None, deterministic: bool) -> jax.Array:
        windows, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        qkv = nn.Dense(
            3 * channels,
            use_bias=self.qkv_bias,
            dtype=self.dtype,
            kernel_init=dense_init(),
            name="qkv",
        )(x)
        # timm orders qkv output channels as (3, heads, head_dim).
        qkv = qkv.reshape(windows, tokens, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

        table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(stddev=0.02),
            ((2 * self.window_size - 1) ** 2, self.num_heads),
        )
        index = relative_position_index(self.window_size).reshape(-1)
        bias = table[index].reshape(tokens, tokens, self.num_heads).transpose(2, 0, 1)
        scale = head_dim**-0.5
        if self.implementation == "einsum":
            out = _einsum_attention(
                q,
                k,
                v,
                bias,
                mask,
                scale,
                self.dtype,
                nn.Dropout(self.attn_drop_rate),
                deterministic,
            )
        elif self.implementation == "pallas":
            from swin_flax.model.pallas_attention import window_attention

            out = window_attention(
                q,
                k,
                v,
                bias,
                mask,
                scale,
                self.dtype,
                nn.Dropout(self.attn_drop_rate),
                deterministic,
            )
        else:
            out = _fused_attention(q, k, v, bias, mask, scale, self.implementation)
        out = out.reshape(windows, tokens, channels)
        out = nn.Dense(channels, dtype=self.dtype, kernel_init=dense_init(), name="proj")(out)
        return nn.Dropout(self.proj_drop_rate)(out, deterministic=deterministic)


# The implementations of ATTENTION_IMPLEMENTATIONS:
#   einsum: explicit q@k, bias + mask, float32 softmax, @v (supports attention dropout)
#   xla / cudnn: jax.nn.dot_product_attention with the bias and mask as one additive bias
#   (windows folded into the head axis so the per-window mask broadcasts over the batch);
#   cudnn selects the fused cuDNN kernel on NVIDIA GPUs (bf16/fp16 only).
#   pallas: one fused kernel per (window, head) with bias and mask, 49 tokens padded to 64
#   (swin_flax/model/pallas_attention.py); forward only fused, not yet measured on a GPU.


def _einsum_attention(q, k, v, bias, mask, scale, dtype, dropout, deterministic):
    windows, tokens, heads, _ = q.shape
    logits = jnp.einsum("bnhd,bmhd->bhnm", q * scale, k)
    # Softmax statistics in float32 whatever the compute dtype.
    logits = logits.astype(jnp.float32) + bias[None]
    if mask is not None:
        num_windows = mask.shape[0]
        logits = logits.reshape(-1, num_windows, heads, tokens, tokens)
        logits = logits + mask[None, :, None]
        logits = logits.reshape(windows, heads, tokens, tokens)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    weights = dropout(weights, deterministic=deterministic)
    return jnp.einsum("bhnm,bmhd->bnhd", weights, v)


def _fused_attention(q, k, v, bias, mask, scale, implementation):
    windows, tokens, heads, head_dim = q.shape
    impl = None if implementation == "xla" else implementation
    if mask is None:
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias[None].astype(q.dtype), scale=scale, implementation=impl
        )
    num_windows = mask.shape[0]
    full_bias = (bias[None] + mask[:, None]).reshape(1, num_windows * heads, tokens, tokens)

    def fold(t):  # (B*nW, N, H, D) -> (B, N, nW*H, D)
        t = t.reshape(-1, num_windows, tokens, heads, head_dim).transpose(0, 2, 1, 3, 4)
        return t.reshape(-1, tokens, num_windows * heads, head_dim)

    out = jax.nn.dot_product_attention(
        fold(q), fold(k), fold(v), bias=full_bias.astype(q.dtype), scale=scale, implementation=impl
    )
    out = out.reshape(-1, tokens, num_windows, heads, head_dim).transpose(0, 2, 1, 3, 4)
    return out.reshape(windows, tokens, heads, head_dim)
