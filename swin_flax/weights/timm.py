"""Swin weights between timm (PyTorch) and swin_flax, in both directions.

Import (timm / original Microsoft / Hugging Face transformers checkpoint -> Flax):

    sd = sources.load_state_dict("model.safetensors")  # or a .pth, a directory, a hub name
    model = SwinTransformer(SwinConfig(**dict(layouts.infer_architecture(sd), num_classes=100)))
    params = timm_to_flax(sd, model, head="reinit")   # strict: every problem in one error

or all of it: `swin_flax.weights.importer.import_weights(source, ...)` (a transformers
directory's config.json included), `importer.convert(source, out_dir, ...)` to write an
orbax checkpoint directory.

Export (Flax -> timm): `save_timm_safetensors(params, path)` then in PyTorch
`SwinTransformer(**timm_model_kwargs(model)).load_state_dict(..., strict=True)`;
to transformers: `swin_flax.weights.transformers.save_transformers`.

The pieces: reading files and hub repos is `swin_flax.weights.sources`, the key table
(`KEY_TABLE`, read by both directions) is `swin_flax.weights.timm_keys`, bias-table resampling
`swin_flax.weights.bias_table`, layouts normalised to timm's and the architecture
inferred from the keys `swin_flax.weights.layouts`; this module converts. Derived buffers
(`relative_position_index`, `attn_mask`) are never loaded: the model recomputes them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swin_flax._files import replacing
from swin_flax.errors import ConversionError, UserInputError
from swin_flax.model.swin import SwinTransformer, abstract_params
from swin_flax.weights import transformers
from swin_flax.weights.bias_table import (
    resize_relative_position_bias_table,
    window_from_table_length,
)
from swin_flax.weights.layouts import to_timm_layout
from swin_flax.weights.timm_keys import (
    array_to_flax,
    flax_path_to_timm_key,
    flax_to_timm,
    timm_key_to_flax_path,
    timm_shape,
)

logger = logging.getLogger(__name__)

HEAD_MODES = ("keep", "reinit", "drop")


# --------------------------------------------------------------------------------------
# Layout normalisation and architecture inference.


# --------------------------------------------------------------------------------------
# timm -> Flax.


def _fresh_head(model: SwinTransformer, rng: int | jax.Array) -> dict:
    """The head of `init_params(model, rng)`; jit lets XLA skip everything else."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    images = jnp.zeros((1, model.img_size, model.img_size, model.in_chans), jnp.float32)
    return jax.jit(lambda r: model.init(r, images)["params"]["head"])(rng)


def timm_to_flax(
    state_dict: Mapping[str, Any],
    model: SwinTransformer,
    *,
    head: str = "keep",
    rng: int | jax.Array = 0,
    bias_resize: str = "timm",
) -> dict:
    """Flax parameters for `model` from a timm (or Microsoft) state_dict.

    Strict: every missing key, unexpected key and shape mismatch is collected and raised
    together in one `ConversionError`. The classifier follows `head`:
      "keep"   load it; its shape must match model.num_classes;
      "reinit" ignore the checkpoint's head, use a fresh one from the model's init (rng);
      "drop"   ignore the checkpoint's head; the model must be headless (num_classes=0).
    Relative position bias tables are resampled (`bias_resize`, see
    `resize_relative_position_bias_table`) where a block's window differs from the
    checkpoint's, e.g. a window-7 checkpoint into a window-12 model.
    """
    if head not in HEAD_MODES:
        raise UserInputError(f"head must be one of {HEAD_MODES}, got {head!r}")
    if head == "drop" and model.num_classes != 0:
        raise ConversionError(
            f"head='drop' builds a headless model, but the model has num_classes="
            f"{model.num_classes}; use num_classes=0, or head='reinit' for a new head"
        )
    if head == "reinit" and model.num_classes == 0:
        raise ConversionError("head='reinit' needs a model with num_classes > 0")

    target = traverse_util.flatten_dict(abstract_params(model), sep="/")
    sd = to_timm_layout(state_dict)
    loaded: dict[str, np.ndarray] = {}
    unexpected, mismatched, resized = [], [], []
    present: set[str] = set()  # target paths the checkpoint has, whatever their shape
    for key, value in sd.items():
        mapped = timm_key_to_flax_path(key)
        if mapped is not None and mapped[0].startswith("head/") and head != "keep":
            continue  # the caller asked for a new head / no head
        if mapped is None or mapped[0] not in target:
            unexpected.append((key, tuple(value.shape)))
            continue
        path, layout = mapped
        present.add(path)
        want = tuple(target[path].shape)
        value = np.asarray(value)
        if path.endswith("relative_position_bias_table") and value.shape != want:
            window = window_from_table_length(want[0])
            if (
                value.ndim == 2
                and value.shape[1] == want[1]
                and window_from_table_length(value.shape[0]) is not None
            ):
                value = resize_relative_position_bias_table(value, window, method=bias_resize)
                resized.append(path)
        if value.shape != timm_shape(want, layout):
            mismatched.append((key, tuple(value.shape), timm_shape(want, layout)))
            continue
        loaded[path] = array_to_flax(value, layout).astype(target[path].dtype)

    missing = [
        path
        for path in target
        if path not in present and not (head in ("reinit", "drop") and path.startswith("head/"))
    ]
    if unexpected or missing or mismatched:
        raise ConversionError(
            _problem_report(
                model,
                head,
                missing,
                unexpected,
                mismatched,
                target,
                transformers.key_namer(state_dict),
            )
        )
    if resized:
        logger.info(
            "resized %d relative position bias tables to the model's windows (%s)",
            len(resized),
            bias_resize,
        )

    params = {path: jnp.asarray(value) for path, value in loaded.items()}
    if head == "reinit":
        for name, value in _fresh_head(model, rng).items():
            params[f"head/{name}"] = value
    return traverse_util.unflatten_dict(params, sep="/")


def _problem_report(model, head, missing, unexpected, mismatched, target, name) -> str:
    """The report of `timm_to_flax`; keys are shown as `name` gives them (the checkpoint's
    own naming: a transformers checkpoint's problems in transformers names)."""
    lines = [f"the checkpoint does not fit {model.config.describe()}:"]
    if missing:
        lines.append(f"  missing from the checkpoint ({len(missing)}):")
        for path in missing:
            timm_key, layout = flax_path_to_timm_key(path) or (path, None)
            want = timm_shape(target[path].shape, layout)
            lines.append(f"    {name(timm_key)} (model expects {want})")
    if unexpected:
        lines.append(f"  unexpected in the checkpoint ({len(unexpected)}):")
        lines += [f"    {name(key)} {shape}" for key, shape in unexpected]
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}):")
        lines += [
            f"    {name(key)}: checkpoint {have}, model expects {want}"
            for key, have, want in mismatched
        ]
    head_involved = any(key.startswith("head.") for key, *_ in unexpected + mismatched) or any(
        path.startswith("head/") for path in missing
    )
    if head_involved and head == "keep":
        lines.append(
            "  hint: the classifier head does not match; pass head='reinit' (CLI: "
            "--reinit-head) for a fresh head with num_classes outputs, or head='drop' "
            "(CLI: --drop-head) with num_classes=0 for a headless model"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Flax -> timm.


def timm_model_kwargs(model: SwinTransformer) -> dict:
    """kwargs for timm's `SwinTransformer(**kwargs)` with the architecture of `model`."""
    return dict(
        img_size=model.img_size,
        patch_size=model.patch_size,
        in_chans=model.in_chans,
        num_classes=model.num_classes,
        embed_dim=model.embed_dim,
        depths=tuple(model.depths),
        num_heads=tuple(model.num_heads),
        window_size=model.window_size,
        mlp_ratio=model.mlp_ratio,
        qkv_bias=model.qkv_bias,
        drop_rate=model.drop_rate,
        proj_drop_rate=model.drop_rate,  # swin_flax's drop_rate also drops after proj/fc2
        attn_drop_rate=model.attn_drop_rate,
        drop_path_rate=model.drop_path_rate,
    )


def save_timm_safetensors(
    params: Mapping[str, Any], path: str | os.PathLike, *, model: SwinTransformer | None = None
) -> Path:
    """Write `flax_to_timm(params)` as a .safetensors file timm can load (strict=True).

    With `model`, the timm kwargs are stored in the file's metadata
    ('swin_flax.timm_kwargs', JSON).
    """
    from safetensors.numpy import save_file

    path = Path(path)
    metadata = {"format": "pt"}
    if model is not None:
        metadata["swin_flax.timm_kwargs"] = json.dumps(timm_model_kwargs(model))
    # Atomically: a kill or a full disk leaves no half-written file that timm would reject.
    with replacing(path) as temporary:
        save_file(flax_to_timm(params), str(temporary), metadata=metadata)
    return path
