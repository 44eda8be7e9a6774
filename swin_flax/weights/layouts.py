"""Any source's state dict in timm's key layout, and the architecture its keys imply."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from swin_flax.errors import ConversionError
from swin_flax.weights import transformers
from swin_flax.weights.bias_table import (
    window_from_table_length,
)
from swin_flax.weights.sources import as_numpy
from swin_flax.weights.timm_keys import (
    DERIVED_BUFFERS,
)


def to_timm_layout(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Normalise a state_dict to timm's current key layout (idempotent).

    - Original Microsoft checkpoints put PatchMerging at the END of stages 0..S-2
      (`layers.N.downsample`); timm puts it at the START of stages 1..S-1. Detected by
      the presence of `layers.0.downsample.*`; renamed N -> N+1, no weight reordering.
    - `head.weight`/`head.bias` (Microsoft, older timm) -> `head.fc.*`.
    - Derived buffers (`relative_position_index`, `attn_mask`) are dropped.
    - A `module.` prefix (DistributedDataParallel) is stripped.
    - Hugging Face transformers checkpoints (`swin.encoder.layers...`, both namings) are
      renamed by `swin_flax.weights.transformers.to_timm_layout`.
    Values become numpy arrays; torch tensors (e.g. `model.state_dict()`) are accepted.
    Swin-V2 weights (any layout) are refused by name.
    """
    keys = list(state_dict)
    check_not_swin_v2(keys)
    strip = "module." if keys and all(k.startswith("module.") for k in keys) else ""
    if transformers.is_transformers_layout(k[len(strip) :] for k in keys):
        return transformers.to_timm_layout(
            {k[len(strip) :]: as_numpy(v) for k, v in state_dict.items()}
        )
    microsoft = any(k[len(strip) :].startswith("layers.0.downsample.") for k in keys)
    out = {}
    for key, value in state_dict.items():
        key = key[len(strip) :]
        if key.rsplit(".", 1)[-1] in DERIVED_BUFFERS:
            continue
        if microsoft:
            key = re.sub(
                r"^layers\.(\d+)\.downsample\.",
                lambda m: f"layers.{int(m.group(1)) + 1}.downsample.",
                key,
            )
        if key in ("head.weight", "head.bias"):
            key = "head.fc." + key.split(".")[-1]
        out[key] = as_numpy(value)
    return out


# Parameters only Swin-V2 has: its continuous position bias MLP (timm: cpb_mlp, transformers:
# continuous_position_bias_mlp) and its attention's learned temperature (logit_scale; CLIP's
# top-level logit_scale is not an attention's).
_SWIN_V2_KEY = re.compile(
    r"\.(?P<name>cpb_mlp|continuous_position_bias_mlp)\.|(attn|self)\.(?P<scale>logit_scale)$"
)


def check_not_swin_v2(keys) -> None:
    """Refuse Swin-V2 weights by name: without it they would read as a damaged Swin
    (no relative_position_bias_table), which they are not."""
    found = sorted(
        {m.group("name") or m.group("scale") for key in keys if (m := _SWIN_V2_KEY.search(key))}
    )
    if found:
        raise ConversionError(
            f"Swin-V2 checkpoints are not supported: these weights have {', '.join(found)} "
            "parameters, which only Swin-V2 has; swin_flax reads Swin (v1) weights (timm's "
            "swin_*, not swinv2_*; transformers' Swin, not Swinv2)"
        )


_VIT_BLOCK = re.compile(r"blocks\.\d+\.attn\.qkv\.")


def _looks_like(sd: Mapping[str, Any]) -> str:
    """What weights without any Swin stage (layers.N.blocks.M) look like, from their keys."""
    keys = set(sd)
    vit = [k for k in ("cls_token", "pos_embed", "dist_token") if k in keys]
    if vit and any(_VIT_BLOCK.match(k) for k in keys):
        return (
            f"it looks like a ViT (one column of blocks.N with {', '.join(vit)}), not a Swin "
            "(stages of layers.N.blocks.M); swin_flax reads Swin (v1) weights"
        )
    sample = ", ".join(sorted(keys)[:5])
    return (
        f"no Swin stage (layers.N.blocks.M) among its keys (first keys: {sample}); swin_flax "
        "reads Swin (v1) weights in the timm, Microsoft or transformers layout"
    )


def default_img_size(window_size: int, patch_size: int = 4, num_stages: int = 4) -> int:
    """The image size whose last stage is exactly one window: window * patch * 2**(S-1).

    This is timm's default for its released models: 224 for window 7 and 384 for window
    12 (patch 4, four stages).
    """
    return window_size * patch_size * 2 ** (num_stages - 1)


def infer_architecture(state_dict: Mapping[str, Any]) -> dict:
    """The `SwinTransformer` fields that the weights determine.

    embed_dim, patch_size, in_chans (patch embedding conv), depths (blocks per stage),
    num_heads (width of each stage's bias table), window_size (the largest table:
    (2w-1)^2 rows), mlp_ratio (fc1 width / dim), qkv_bias, num_classes (head rows, 0
    when headless). img_size is not stored in the weights: a stage whose table is smaller
    than the window is exactly one window wide, which fixes it; otherwise it is
    `default_img_size` (224 for window 7, 384 for window 12).
    """
    sd = to_timm_layout(state_dict)
    conv = sd.get("patch_embed.proj.weight")
    if conv is None or conv.ndim != 4:
        sample = ", ".join(sorted(sd)[:5])
        model_type = transformers.other_model_type(sd)
        if model_type:
            raise ConversionError(
                f"a transformers {model_type!r} model (first keys: {sample}), not a Swin "
                "Transformer: swin_flax reads Swin (v1) weights in the timm, Microsoft or "
                "transformers layout"
            )
        raise ConversionError(
            "not a Swin Transformer state_dict: no 4-D 'patch_embed.proj.weight' "
            f"(first keys: {sample})"
        )
    embed_dim, in_chans, patch_h, patch_w = (int(d) for d in conv.shape)
    if patch_h != patch_w:
        raise ConversionError(f"non-square patches {patch_h}x{patch_w} are not supported")

    block_re = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
    blocks: dict[int, set[int]] = {}
    for key in sd:
        match = block_re.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not blocks:
        raise ConversionError(f"not a Swin Transformer state_dict: {_looks_like(sd)}")
    if sorted(blocks) != list(range(len(blocks))):
        raise ConversionError(
            f"not a Swin Transformer state_dict: stages found {sorted(blocks)}, expected "
            "layers.0.blocks.0 ... with consecutive stage indices"
        )
    depths = tuple(len(blocks[i]) for i in range(len(blocks)))

    num_heads, windows = [], []
    for i in range(len(depths)):
        table = sd.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        window = (
            None if table is None or table.ndim != 2 else window_from_table_length(table.shape[0])
        )
        if window is None:
            raise ConversionError(
                f"layers.{i}.blocks.0.attn.relative_position_bias_table is missing or not "
                "a ((2w-1)^2, heads) table"
            )
        num_heads.append(int(table.shape[1]))
        windows.append(window)
    window_size = max(windows)

    img_size = default_img_size(window_size, patch_h, len(depths))
    for i, window in enumerate(windows):
        if window < window_size:  # this stage is one window: its side is `window`
            img_size = window * patch_h * 2**i
            break

    fc1 = sd.get("layers.0.blocks.0.mlp.fc1.weight")
    mlp_ratio = 4.0 if fc1 is None else fc1.shape[0] / embed_dim
    head = sd.get("head.fc.weight")
    return dict(
        img_size=img_size,
        patch_size=patch_h,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=tuple(num_heads),
        window_size=window_size,
        mlp_ratio=float(mlp_ratio),
        qkv_bias="layers.0.blocks.0.attn.qkv.bias" in sd,
        num_classes=0 if head is None else int(head.shape[0]),
    )
