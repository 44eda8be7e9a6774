"""Hugging Face transformers Swin checkpoints (`SwinForImageClassification`, `SwinModel`).

Import: `swin_flax.weights.timm` reads a transformers directory (`config.json` + `model.safetensors`
or `pytorch_model.bin`), a bare weights file or a hub name such as
`microsoft/swin-tiny-patch4-window7-224`; `to_timm_layout` renames its keys to timm's, and
`swin_flax.weights.transformers_config.architecture_from_config` checks `config.json` against the weights.

Export: `save_transformers(params, model, out_dir)` writes a directory that
`SwinForImageClassification.from_pretrained(out_dir)` loads with no missing or unexpected
keys. Neither direction imports torch or transformers.

transformers' Swin computes what timm's does (LayerNorm eps 1e-5, exact GELU, the same shift
mask, PatchMerging order x0..x3, mean pooling after the last LayerNorm), so the mapping is
renaming plus fusing q, k, v into timm's qkv. Two differences in layout:
  - PatchMerging sits at the END of stages 0..S-2 (`layers.i.downsample`), timm's at the
    START of stages 1..S-1: stage i here is stage i+1 there.
  - Every block's bias table covers `config.window_size`; transformers cannot run a stage
    smaller than the window (timm shrinks the window there), so export refuses such models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from swin_flax.errors import ConversionError
from swin_flax.model.swin import SwinTransformer
from swin_flax.weights.timm_keys import DERIVED_BUFFERS, flax_to_timm
from swin_flax.weights.transformers_config import transformers_config

PREFIX = "swin."  # SwinForImageClassification's backbone; a bare SwinModel has none
CLASSIFIER = "classifier."  # the one key group outside the backbone


class Row(NamedTuple):
    hub: str  # the hub files' names: what save_pretrained writes and transformers < 5 uses
    v5: str  # transformers 5 module names (`model.state_dict()`), renamed from `hub` on load
    timm: str
    part: int | None = None  # q, k, v: rows 0, 1, 2 of timm's fused qkv
    stage_shift: int = 0  # PatchMerging: end of stage i here = start of stage i+1 in timm


# Key templates: {i} stage, {j} block, {p} weight or bias.
_B, _T = "encoder.layers.{i}.blocks.{j}.", "layers.{i}.blocks.{j}."
_D = "encoder.layers.{i}.downsample."
KEY_TABLE: tuple[Row, ...] = (
    Row(
        "embeddings.patch_embeddings.projection.{p}",
        "embeddings.patch_embeddings.projection.{p}",
        "patch_embed.proj.{p}",
    ),
    Row("embeddings.norm.{p}", "embeddings.norm.{p}", "patch_embed.norm.{p}"),
    Row(_B + "layernorm_before.{p}", _B + "layernorm_before.{p}", _T + "norm1.{p}"),
    Row(_B + "attention.self.query.{p}", _B + "attention.q_proj.{p}", _T + "attn.qkv.{p}", 0),
    Row(_B + "attention.self.key.{p}", _B + "attention.k_proj.{p}", _T + "attn.qkv.{p}", 1),
    Row(_B + "attention.self.value.{p}", _B + "attention.v_proj.{p}", _T + "attn.qkv.{p}", 2),
    Row(
        _B + "attention.self.relative_position_bias_table",
        _B + "attention.relative_position_bias.relative_position_bias_table",
        _T + "attn.relative_position_bias_table",
    ),
    Row(_B + "attention.output.dense.{p}", _B + "attention.o_proj.{p}", _T + "attn.proj.{p}"),
    Row(_B + "layernorm_after.{p}", _B + "layernorm_after.{p}", _T + "norm2.{p}"),
    Row(_B + "intermediate.dense.{p}", _B + "mlp.fc1.{p}", _T + "mlp.fc1.{p}"),
    Row(_B + "output.dense.{p}", _B + "mlp.fc2.{p}", _T + "mlp.fc2.{p}"),
    Row(
        _D + "reduction.weight",
        _D + "reduction.weight",
        "layers.{i}.downsample.reduction.weight",
        stage_shift=1,
    ),
    Row(_D + "norm.{p}", _D + "norm.{p}", "layers.{i}.downsample.norm.{p}", stage_shift=1),
    Row("layernorm.{p}", "layernorm.{p}", "norm.{p}"),
    Row(CLASSIFIER + "{p}", CLASSIFIER + "{p}", "head.fc.{p}"),
)
_FIELDS = {"i": r"\d+", "j": r"\d+", "p": r"weight|bias"}


def _regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for field, values in _FIELDS.items():
        pattern = pattern.replace(re.escape("{" + field + "}"), rf"(?P<{field}>{values})")
    return re.compile(pattern + r"\Z")


_COMPILED = [(row, _regex(row.hub), _regex(row.v5), _regex(row.timm)) for row in KEY_TABLE]
_V5_ONLY = [v5_re for row, _, v5_re, _ in _COMPILED if row.v5 != row.hub]
_SWIN_KEY = re.compile(r"(swin\.)?(embeddings\.patch_embeddings|encoder\.layers)\.")
_OTHER_MODEL_KEY = re.compile(r"([A-Za-z0-9_]+)\.(embeddings|encoder)\.")


def _fill(template: str, fields: Mapping[str, str], shift: int) -> str:
    if "i" in fields:
        fields = dict(fields, i=str(int(fields["i"]) + shift))
    return template.format(**fields)


def _local(key: str) -> str:
    return key[len(PREFIX) :] if key.startswith(PREFIX) else key


# --------------------------------------------------------------------------------------
# Recognising a transformers checkpoint.


def is_transformers_layout(keys) -> bool:
    """True for the keys of a transformers Swin (either naming, with or without `swin.`)."""
    return any(_SWIN_KEY.match(key) for key in keys)


def other_model_type(keys) -> str | None:
    """'vit' for the keys of a transformers ViT (`vit.embeddings...`), None for a Swin."""
    for key in keys:
        match = _OTHER_MODEL_KEY.match(key)
        if match and match.group(1) != "swin":
            return match.group(1)
    return None


# --------------------------------------------------------------------------------------
# Import: transformers keys -> timm keys.


def _match(key: str) -> tuple[Row, str] | None:
    """(row, timm key) of a transformers key in either naming, None if it has none."""
    local = _local(key)
    for row, hub_re, v5_re, _ in _COMPILED:
        match = hub_re.match(local) or v5_re.match(local)
        if match and not (row.hub.startswith(CLASSIFIER) and local != key):  # no swin.classifier
            return row, _fill(row.timm, match.groupdict(), row.stage_shift)
    return None


def to_timm_layout(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm-layout state_dict of a transformers Swin state_dict (numpy values).

    Separate q, k, v projections become timm's fused qkv (rows [q; k; v], each in
    (heads, head_dim) order in both). Derived buffers are dropped. Keys the table does not
    know, and q/k/v groups that cannot be fused (one missing, shapes differ), are kept
    under their own names, so that `timm_to_flax` reports them with everything else.
    """
    out: dict[str, np.ndarray] = {}
    qkv: dict[str, dict[int, tuple[str, np.ndarray]]] = {}
    for key, value in state_dict.items():
        if key.rsplit(".", 1)[-1] in DERIVED_BUFFERS:
            continue
        found = _match(key)
        if found is None:
            out[key] = value
        elif found[0].part is None:
            out[found[1]] = value
        else:
            qkv.setdefault(found[1], {})[found[0].part] = (key, value)
    for timm_key, parts in qkv.items():
        shapes = {parts[k][1].shape for k in parts}
        if len(parts) == 3 and len(shapes) == 1:
            out[timm_key] = np.concatenate([parts[k][1] for k in range(3)], axis=0)
        else:
            out.update(parts.values())
    return out


def key_namer(state_dict: Mapping[str, Any]) -> Callable[[str], str]:
    """timm key -> the name it has in `state_dict`'s own naming (for error messages)."""
    keys = list(state_dict)
    if not is_transformers_layout(keys):
        return lambda key: key
    v5 = any(v5_re.match(_local(key)) for key in keys for v5_re in _V5_ONLY)
    prefix = PREFIX if any(key.startswith(PREFIX) for key in keys) else ""

    def name(timm_key: str) -> str:
        for row, _, _, timm_re in _COMPILED:
            match = timm_re.match(timm_key)
            if match:
                local = _fill(row.v5 if v5 else row.hub, match.groupdict(), -row.stage_shift)
                if row.part is not None:  # one timm key, three here
                    local = local.replace(".query.", ".{query,key,value}.").replace(
                        ".q_proj.", ".{q,k,v}_proj."
                    )
                return local if row.hub.startswith(CLASSIFIER) else prefix + local
        return timm_key

    return name


# --------------------------------------------------------------------------------------
# config.json.


# --------------------------------------------------------------------------------------
# Export.


def from_timm_layout(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The hub-file naming (what transformers 4 and 5 load) of a timm state_dict."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        for row, _, _, timm_re in _COMPILED:
            match = timm_re.match(key)
            if match and (row.part is None or row.part == 0):
                break
        else:
            unknown.append(key)
            continue
        parts = [value] if row.part is None else np.split(value, 3, axis=0)
        for part, array in enumerate(parts):
            hub_row = KEY_TABLE[KEY_TABLE.index(row) + part]  # q, k, v rows follow each other
            local = _fill(hub_row.hub, match.groupdict(), -row.stage_shift)
            name = local if row.hub.startswith(CLASSIFIER) else PREFIX + local
            out[name] = np.ascontiguousarray(array)
    if unknown:
        raise ConversionError("keys with no transformers equivalent: " + ", ".join(unknown))
    return out


def _check_runnable(model: SwinTransformer) -> None:
    side = model.img_size // model.patch_size
    for i in range(len(model.depths)):
        if side // 2**i < model.window_size:
            raise ConversionError(
                f"stage {i} of this model is {side // 2**i}x{side // 2**i} tokens, smaller "
                f"than its window {model.window_size}; transformers' Swin cannot run that "
                "(it keeps one window size for every stage), timm can: export to timm"
            )


def save_transformers(
    params: Mapping[str, Any],
    model: SwinTransformer,
    out_dir: str | Path,
    *,
    class_names=None,
    overwrite: bool = False,
) -> Path:
    """Write `config.json` and `model.safetensors` for `SwinForImageClassification`.

    The directory may exist only with `overwrite`; then these two files are replaced and
    nothing else in it is touched.
    """
    from safetensors.numpy import save_file

    _check_runnable(model)
    config = transformers_config(model, class_names)
    weights = from_timm_layout(flax_to_timm(params))
    out_dir = Path(out_dir)
    if out_dir.exists() and not (overwrite and out_dir.is_dir()):
        raise ConversionError(
            f"{out_dir} already exists"
            + (
                "; pass --overwrite to replace its config.json and model.safetensors"
                if out_dir.is_dir()
                else " and is not a directory"
            )
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


__all__ = [
    "KEY_TABLE",
    "is_transformers_layout",
    "other_model_type",
    "to_timm_layout",
    "key_namer",
    "from_timm_layout",
    "save_transformers",
]
