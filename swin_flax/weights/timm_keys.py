"""The timm <-> swin_flax key mapping: one table both directions read, and timm's layouts.

`KEY_TABLE` holds timm key templates, Flax path templates and the layout change between
them; `timm_key_to_flax_path` / `flax_path_to_timm_key` look keys up in it and
`flax_to_timm` turns a Flax parameter tree into a timm state_dict. Shared by
`swin_flax.weights.timm` (import) and `swin_flax.weights.transformers` (transformers' layout, which is
renamed to timm's first); imports neither.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from swin_flax.errors import ConversionError

# Buffers the model recomputes; never loaded, never written.
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")


# --------------------------------------------------------------------------------------
# The key table: timm key template, Flax path template, layout change.
#   "linear": torch Linear weight (out, in)        <-> Flax Dense kernel (in, out)
#   "conv":   torch Conv2d weight (O, I, H, W)     <-> Flax Conv kernel (H, W, I, O)
#   None:     same array
# {i} is a stage index, {j} a block index.

_LINEAR_PERM = (1, 0)
_CONV_PERM = (2, 3, 1, 0)  # OIHW -> HWIO
_PERMS = {None: None, "linear": _LINEAR_PERM, "conv": _CONV_PERM}


def _layer_norm_rows(timm: str, flax: str) -> list[tuple[str, str, str | None]]:
    return [(f"{timm}.weight", f"{flax}/scale", None), (f"{timm}.bias", f"{flax}/bias", None)]


def _linear_rows(timm: str, flax: str, bias: bool = True) -> list[tuple[str, str, str | None]]:
    rows = [(f"{timm}.weight", f"{flax}/kernel", "linear")]
    if bias:
        rows.append((f"{timm}.bias", f"{flax}/bias", None))
    return rows


_BLOCK_T, _BLOCK_F = "layers.{i}.blocks.{j}", "layers_{i}/blocks_{j}"
KEY_TABLE: tuple[tuple[str, str, str | None], ...] = tuple(
    [
        ("patch_embed.proj.weight", "patch_embed/proj/kernel", "conv"),
        ("patch_embed.proj.bias", "patch_embed/proj/bias", None),
    ]
    + _layer_norm_rows("patch_embed.norm", "patch_embed/norm")
    + _layer_norm_rows("layers.{i}.downsample.norm", "layers_{i}/downsample/norm")
    + _linear_rows("layers.{i}.downsample.reduction", "layers_{i}/downsample/reduction", bias=False)
    + _layer_norm_rows(f"{_BLOCK_T}.norm1", f"{_BLOCK_F}/norm1")
    + _linear_rows(f"{_BLOCK_T}.attn.qkv", f"{_BLOCK_F}/attn/qkv")
    + [
        (
            f"{_BLOCK_T}.attn.relative_position_bias_table",
            f"{_BLOCK_F}/attn/relative_position_bias_table",
            None,
        )
    ]
    + _linear_rows(f"{_BLOCK_T}.attn.proj", f"{_BLOCK_F}/attn/proj")
    + _layer_norm_rows(f"{_BLOCK_T}.norm2", f"{_BLOCK_F}/norm2")
    + _linear_rows(f"{_BLOCK_T}.mlp.fc1", f"{_BLOCK_F}/mlp/fc1")
    + _linear_rows(f"{_BLOCK_T}.mlp.fc2", f"{_BLOCK_F}/mlp/fc2")
    + _layer_norm_rows("norm", "norm")
    + _linear_rows("head.fc", "head")
)


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for field in ("i", "j"):
        pattern = pattern.replace(re.escape("{" + field + "}"), rf"(?P<{field}>\d+)")
    return re.compile(pattern + r"\Z")


_COMPILED = [(_template_regex(t), _template_regex(f), t, f, layout) for t, f, layout in KEY_TABLE]


def timm_key_to_flax_path(key: str) -> tuple[str, str | None] | None:
    """`('layers_0/blocks_1/attn/qkv/kernel', 'linear')` for a timm key, None if unknown."""
    for timm_re, _, _, flax_template, layout in _COMPILED:
        match = timm_re.match(key)
        if match:
            return flax_template.format(**match.groupdict()), layout
    return None


def flax_path_to_timm_key(path: str) -> tuple[str, str | None] | None:
    """Inverse of `timm_key_to_flax_path`."""
    for _, flax_re, timm_template, _, layout in _COMPILED:
        match = flax_re.match(path)
        if match:
            return timm_template.format(**match.groupdict()), layout
    return None


def array_to_flax(array: np.ndarray, layout: str | None) -> np.ndarray:
    """A timm array in the layout of its Flax parameter."""
    perm = _PERMS[layout]
    return array if perm is None else np.transpose(array, perm)


def _array_to_timm(array: np.ndarray, layout: str | None) -> np.ndarray:
    perm = _PERMS[layout]
    return array if perm is None else np.transpose(array, np.argsort(perm))


def timm_shape(flax_shape: tuple[int, ...], layout: str | None) -> tuple[int, ...]:
    """The timm shape of a Flax parameter of `flax_shape`."""
    perm = _PERMS[layout]
    if perm is None or len(flax_shape) != len(perm):
        return tuple(flax_shape)
    return tuple(flax_shape[k] for k in np.argsort(perm))


def flax_to_timm(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """timm state_dict (float32, contiguous numpy) of Flax Swin parameters."""
    if set(params) == {"params"}:
        params = params["params"]
    out, unknown = {}, []
    for path, value in traverse_util.flatten_dict(dict(params), sep="/").items():
        mapped = flax_path_to_timm_key(path)
        if mapped is None:
            unknown.append(path)
            continue
        key, layout = mapped
        array = _array_to_timm(np.asarray(jax.device_get(value), np.float32), layout)
        out[key] = np.ascontiguousarray(array)
    if unknown:
        raise ConversionError(
            "parameters with no timm equivalent (not a swin_flax SwinTransformer tree?): "
            + ", ".join(unknown)
        )
    return out


__all__ = [
    "KEY_TABLE",
    "DERIVED_BUFFERS",
    "timm_key_to_flax_path",
    "flax_path_to_timm_key",
    "array_to_flax",
    "timm_shape",
    "flax_to_timm",
]
