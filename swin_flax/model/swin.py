"""Swin Transformer v1 in Flax linen, numerically equal to timm's `SwinTransformer`.

Images are NHWC. Parameters are float32; `dtype` sets the compute dtype (bf16 on
accelerators). The parameter tree mirrors timm's state_dict so that conversion is a
table of renames (see `swin_flax/weights/timm.py`):

    patch_embed/{proj,norm}
    layers_{i}/downsample/{norm,reduction}        (stages 1.., at the start of the stage)
    layers_{i}/blocks_{j}/{norm1,attn/{qkv,proj,relative_position_bias_table},norm2,mlp/{fc1,fc2}}
    norm, head

Derived constants (relative position index, shifted-window mask) are numpy arrays
computed at trace time, never parameters, so checkpoints hold only learned weights.

The module owns its `SwinConfig` (swin_flax/model/config.py): `SwinTransformer(config,
dtype=..., attention=...)`; `model.config` is the architecture, its fields readable on the
module (`model.depths`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from swin_flax.errors import UserInputError
from swin_flax.model.attention import ATTENTION_IMPLEMENTATIONS, WindowAttention, dense_init
from swin_flax.model.config import CONFIG_FIELDS, SwinConfig, raise_problems, window_and_shift
from swin_flax.model.windows import shifted_window_mask, window_partition, window_reverse

# timm uses torch defaults: LayerNorm eps 1e-5 (Flax: 1e-6) and exact-erf GELU
# (Flax: tanh approximation). Both differences show up at the 1e-3 level in logits.
LAYER_NORM_EPS = 1e-5


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype, name=name)


class DropPath(nn.Module):
    """Stochastic depth per example (timm's DropPath): drop the residual branch."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size convolution followed by LayerNorm."""

    patch_size: int
    embed_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = nn.Conv(
            self.embed_dim,
            (self.patch_size, self.patch_size),
            strides=(self.patch_size, self.patch_size),
            padding="VALID",
            dtype=self.dtype,
            name="proj",
        )(images)
        return _layer_norm("norm", self.dtype)(x)


class Mlp(nn.Module):
    hidden_dim: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        channels = x.shape[-1]
        x = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=dense_init(), name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        x = nn.Dropout(self.drop_rate)(x, deterministic=deterministic)
        x = nn.Dense(channels, dtype=self.dtype, kernel_init=dense_init(), name="fc2")(x)
        return nn.Dropout(self.drop_rate)(x, deterministic=deterministic)


class SwinBlock(nn.Module):
    """(Shifted-)window attention and MLP, each pre-norm with a residual connection."""

    num_heads: int
    window_size: int
    shift_size: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    attention: str = "einsum"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        batch, height, width, channels = x.shape
        drop_path = DropPath(self.drop_path_rate)

        shortcut = x
        x = _layer_norm("norm1", self.dtype)(x)
        if self.shift_size:
            x = jnp.roll(x, (-self.shift_size, -self.shift_size), axis=(1, 2))
            mask = shifted_window_mask(height, self.window_size, self.shift_size)
        else:
            mask = None
        windows = window_partition(x, self.window_size)
        windows = WindowAttention(
            self.num_heads,
            self.window_size,
            self.qkv_bias,
            self.attn_drop_rate,
            self.drop_rate,
            dtype=self.dtype,
            implementation=self.attention,
            name="attn",
        )(windows, mask, deterministic)
        x = window_reverse(windows, self.window_size, height, width)
        if self.shift_size:
            x = jnp.roll(x, (self.shift_size, self.shift_size), axis=(1, 2))
        x = shortcut + drop_path(x, deterministic)

        y = _layer_norm("norm2", self.dtype)(x)
        y = Mlp(int(channels * self.mlp_ratio), self.drop_rate, dtype=self.dtype, name="mlp")(
            y, deterministic
        )
        return x + drop_path(y, deterministic)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concatenation (timm order x00, x10, x01, x11), LayerNorm, linear."""

    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
        x = x.reshape(b, h // 2, w // 2, 4 * c)
        x = _layer_norm("norm", self.dtype)(x)
        return nn.Dense(
            self.out_dim,
            use_bias=False,
            dtype=self.dtype,
            kernel_init=dense_init(),
            name="reduction",
        )(x)


class SwinStage(nn.Module):
    """Optional PatchMerging (at the start, as in timm) then `depth` blocks.

    `blocks` runs only those blocks (each with its own windows: block j shifts iff j is
    odd), `entering=False` skips the downsampling: a multi-exit model
    (swin_flax/model/exits.py) runs a stage in pieces, sharing its parameters.
    """

    out_dim: int
    depth: int
    num_heads: int
    window_size: int
    resolution: int  # feature map side after the downsampling
    downsample: bool
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rates: Sequence[float] = ()
    dtype: Any = jnp.float32
    attention: str = "einsum"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        deterministic: bool,
        blocks: Sequence[int] | None = None,
        entering: bool = True,
    ) -> jax.Array:
        if self.downsample and entering:
            x = PatchMerging(self.out_dim, dtype=self.dtype, name="downsample")(x)
        for j in range(self.depth) if blocks is None else blocks:
            window, shift = window_and_shift(self.resolution, self.window_size, shift=j % 2 == 1)
            x = SwinBlock(
                num_heads=self.num_heads,
                window_size=window,
                shift_size=shift,
                mlp_ratio=self.mlp_ratio,
                qkv_bias=self.qkv_bias,
                drop_rate=self.drop_rate,
                attn_drop_rate=self.attn_drop_rate,
                drop_path_rate=self.drop_path_rates[j] if self.drop_path_rates else 0.0,
                dtype=self.dtype,
                attention=self.attention,
                name=f"blocks_{j}",
            )(x, deterministic)
        return x


def _architecture(field: str) -> property:
    """A read-only view of `config.<field>`, as a user of the module reads it."""
    return property(lambda self: getattr(self.config, field), doc=f"`config.{field}`")


class SwinTransformer(nn.Module):
    """Swin Transformer v1 (Liu et al. 2021), timm-compatible, NHWC input.

    `SwinTransformer(config, dtype=..., attention=...)`: the architecture is the `SwinConfig`
    (its fields are readable on the module: `model.depths`, `model.num_classes`, ...); the
    compute dtype and the attention implementation are run choices that do not change what
    the parameters mean. `__call__(images, train=False, return_features=False)` returns the
    logits (or the pooled features when num_classes == 0); with return_features=True it
    returns `(logits, features)` where features maps 'stage_i' to each stage's NHWC output
    and 'norm' to the final normalised feature map.
    """

    config: SwinConfig = SwinConfig()
    dtype: Any = jnp.float32
    attention: str = "einsum"  # one of ATTENTION_IMPLEMENTATIONS; a run choice like dtype

    def __post_init__(self):
        if not isinstance(self.config, SwinConfig):
            raise TypeError(
                f"SwinTransformer takes a SwinConfig, got {type(self.config).__name__}; "
                "build one with SwinConfig(...) or swin_flax.create_model(name, ...)"
            )
        problems = []
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            problems.append(
                f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}"
            )
        elif self.attention != "einsum" and self.config.attn_drop_rate:
            problems.append("attention dropout (attn_drop_rate > 0) needs attention='einsum'")
        raise_problems(problems)
        super().__post_init__()

    @classmethod
    def from_config(cls, config: SwinConfig, **run_options) -> SwinTransformer:
        """The model of `config`; run_options are the rest (dtype, attention, name)."""
        return cls(config, **run_options)

    img_size = _architecture("img_size")
    patch_size = _architecture("patch_size")
    in_chans = _architecture("in_chans")
    embed_dim = _architecture("embed_dim")
    depths = _architecture("depths")
    num_heads = _architecture("num_heads")
    window_size = _architecture("window_size")
    mlp_ratio = _architecture("mlp_ratio")
    qkv_bias = _architecture("qkv_bias")
    drop_rate = _architecture("drop_rate")
    attn_drop_rate = _architecture("attn_drop_rate")
    drop_path_rate = _architecture("drop_path_rate")
    num_classes = _architecture("num_classes")

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return self.config.stage_dims

    @property
    def stage_resolutions(self) -> tuple[int, ...]:
        return self.config.stage_resolutions

    @property
    def num_features(self) -> int:
        return self.stage_dims[-1]

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, return_features: bool = False):
        check_images(images, self.img_size, self.in_chans)
        deterministic = not train
        x = PatchEmbed(self.patch_size, self.embed_dim, dtype=self.dtype, name="patch_embed")(
            images.astype(self.dtype)
        )
        x = nn.Dropout(self.drop_rate)(x, deterministic=deterministic)

        features = {}
        for i, stage in enumerate(swin_stages(self.config, self.dtype, self.attention)):
            x = stage(x, deterministic)
            features[f"stage_{i}"] = x

        x = _layer_norm("norm", self.dtype)(x)
        features["norm"] = x
        x = x.mean(axis=(1, 2))
        x = nn.Dropout(self.drop_rate)(x, deterministic=deterministic)
        if self.num_classes > 0:
            x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=dense_init(), name="head")(
                x
            )
        # Logits leave the model in float32 so losses never run in bf16.
        x = x.astype(jnp.float32)
        return (x, features) if return_features else x


def swin_stages(config: SwinConfig, dtype: Any, attention: str) -> list[SwinStage]:
    """The stages `layers_0..` of `config`, stochastic depth rising linearly over all blocks
    (timm's); called inside a compact method, whose submodules they become."""
    rates = np.linspace(0.0, config.drop_path_rate, sum(config.depths)).tolist()
    starts = np.cumsum((0, *config.depths)).tolist()
    return [
        SwinStage(
            out_dim=config.stage_dims[i],
            depth=depth,
            num_heads=config.num_heads[i],
            window_size=config.window_size,
            resolution=config.stage_resolutions[i],
            downsample=i > 0,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            drop_rate=config.drop_rate,
            attn_drop_rate=config.attn_drop_rate,
            drop_path_rates=tuple(rates[starts[i] : starts[i + 1]]),
            dtype=dtype,
            attention=attention,
            name=f"layers_{i}",
        )
        for i, depth in enumerate(config.depths)
    ]


def check_images(images: jax.Array, img_size: int, in_chans: int) -> None:
    """Shape check at trace time: a clear error instead of a reshape failure deep inside."""
    expected = (img_size, img_size, in_chans)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise UserInputError(
            f"expected images of shape (batch, {img_size}, {img_size}, {in_chans}) (NHWC), "
            f"got {tuple(images.shape)}. Resize the images to the model's img_size, or build "
            "the model with a matching img_size."
        )


def model_config(model: SwinTransformer) -> dict:
    """The JSON-serialisable architecture of `model` (compute dtype excluded: a run choice)."""
    return model.config.to_dict()


def model_from_config(config: dict, **overrides) -> SwinTransformer:
    """The model of a stored `model_config`; overrides change architecture fields or set
    run options (dtype, attention)."""
    run_options = {k: overrides.pop(k) for k in set(overrides) - set(CONFIG_FIELDS)}
    return SwinTransformer(SwinConfig.from_dict(config, **overrides), **run_options)


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def init_params(model: SwinTransformer, rng: jax.Array | int = 0) -> dict:
    """Random parameters (timm's init: trunc-normal 0.02 weights, zero biases)."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    images = jnp.zeros((1, model.img_size, model.img_size, model.in_chans), jnp.float32)
    return jax.jit(lambda r: model.init(r, images)["params"])(rng)


def abstract_params(model: SwinTransformer) -> dict:
    """Shapes and dtypes of the parameters, without allocating them."""
    images = jax.ShapeDtypeStruct((1, model.img_size, model.img_size, model.in_chans), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), images)["params"]


__all__ = [
    "SwinTransformer",
    "SwinConfig",
    "model_config",
    "model_from_config",
    "count_params",
    "init_params",
    "abstract_params",
]
