"""Swin weights between timm (PyTorch) and swin_flax, in both directions.

Import (timm / original Microsoft / Hugging Face transformers checkpoint -> Flax):

    sd = load_state_dict("model.safetensors")        # or a .pth, a directory, a hub name
    model = SwinTransformer(**dict(infer_architecture(sd), num_classes=100))
    params = timm_to_flax(sd, model, head="reinit")   # strict: every problem in one error

or all of it: `import_weights(source, ...)` (a transformers directory's config.json
included), `convert(source, out_dir, ...)` to write an orbax checkpoint directory.

Export (Flax -> timm): `save_timm_safetensors(params, path)` then in PyTorch
`SwinTransformer(**timm_model_kwargs(model)).load_state_dict(..., strict=True)`;
to transformers: `swin_flax.hf_transformers.save_transformers`.

The pieces: reading files and hub repos is `swin_flax.state_dict_io`, the key table
(`KEY_TABLE`, read by both directions) is `swin_flax.timm_keys`, bias-table resampling
`swin_flax.bias_table`; this module normalises layouts to timm's (`to_timm_layout`;
transformers' table is in `swin_flax.hf_transformers`), infers the architecture and
converts. Derived buffers (`relative_position_index`, `attn_mask`) are never loaded: the
model recomputes them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from swin_flax import hf_transformers
from swin_flax.bias_table import (
    BIAS_RESIZE_METHODS, resize_relative_position_bias_table, window_from_table_length,
)
from swin_flax.errors import ConversionError, UserInputError
from swin_flax.model import SwinTransformer, abstract_params
from swin_flax.state_dict_io import as_numpy, load_state_dict, locate, read_file
from swin_flax.timm_keys import (
    DERIVED_BUFFERS, KEY_TABLE, array_to_flax, flax_path_to_timm_key, flax_to_timm,
    timm_key_to_flax_path, timm_shape,
)

logger = logging.getLogger(__name__)

HEAD_MODES = ("keep", "reinit", "drop")


# --------------------------------------------------------------------------------------
# Layout normalisation and architecture inference.

def to_timm_layout(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Normalise a state_dict to timm's current key layout (idempotent).

    - Original Microsoft checkpoints put PatchMerging at the END of stages 0..S-2
      (`layers.N.downsample`); timm puts it at the START of stages 1..S-1. Detected by
      the presence of `layers.0.downsample.*`; renamed N -> N+1, no weight reordering.
    - `head.weight`/`head.bias` (Microsoft, older timm) -> `head.fc.*`.
    - Derived buffers (`relative_position_index`, `attn_mask`) are dropped.
    - A `module.` prefix (DistributedDataParallel) is stripped.
    - Hugging Face transformers checkpoints (`swin.encoder.layers...`, both namings) are
      renamed by `swin_flax.hf_transformers.to_timm_layout`.
    Values become numpy arrays; torch tensors (e.g. `model.state_dict()`) are accepted.
    """
    keys = list(state_dict)
    strip = "module." if keys and all(k.startswith("module.") for k in keys) else ""
    if hf_transformers.is_transformers_layout(k[len(strip):] for k in keys):
        return hf_transformers.to_timm_layout(
            {k[len(strip):]: as_numpy(v) for k, v in state_dict.items()})
    microsoft = any(k[len(strip):].startswith("layers.0.downsample.") for k in keys)
    out = {}
    for key, value in state_dict.items():
        key = key[len(strip):]
        if key.rsplit(".", 1)[-1] in DERIVED_BUFFERS:
            continue
        if microsoft:
            key = re.sub(r"^layers\.(\d+)\.downsample\.",
                         lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key)
        if key in ("head.weight", "head.bias"):
            key = "head.fc." + key.split(".")[-1]
        out[key] = as_numpy(value)
    return out



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
        model_type = hf_transformers.other_model_type(sd)
        if model_type:
            raise ConversionError(
                f"a transformers {model_type!r} model (first keys: {sample}), not a Swin "
                "Transformer: swin_flax reads Swin (v1) weights in the timm, Microsoft or "
                "transformers layout")
        raise ConversionError(
            "not a Swin Transformer state_dict: no 4-D 'patch_embed.proj.weight' "
            f"(first keys: {sample})")
    embed_dim, in_chans, patch_h, patch_w = (int(d) for d in conv.shape)
    if patch_h != patch_w:
        raise ConversionError(f"non-square patches {patch_h}x{patch_w} are not supported")

    block_re = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
    blocks: dict[int, set[int]] = {}
    for key in sd:
        match = block_re.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise ConversionError(
            f"not a Swin Transformer state_dict: stages found {sorted(blocks)}, expected "
            "layers.0.blocks.0 ... with consecutive stage indices")
    depths = tuple(len(blocks[i]) for i in range(len(blocks)))

    num_heads, windows = [], []
    for i in range(len(depths)):
        table = sd.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        window = None if table is None or table.ndim != 2 else window_from_table_length(
            table.shape[0])
        if window is None:
            raise ConversionError(
                f"layers.{i}.blocks.0.attn.relative_position_bias_table is missing or not "
                "a ((2w-1)^2, heads) table")
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



# --------------------------------------------------------------------------------------
# timm -> Flax.

def _fresh_head(model: SwinTransformer, rng: int | jax.Array) -> dict:
    """The head of `init_params(model, rng)`; jit lets XLA skip everything else."""
    if isinstance(rng, int):
        rng = jax.random.PRNGKey(rng)
    images = jnp.zeros((1, model.img_size, model.img_size, model.in_chans), jnp.float32)
    return jax.jit(lambda r: model.init(r, images)["params"]["head"])(rng)


def timm_to_flax(state_dict: Mapping[str, Any], model: SwinTransformer, *, head: str = "keep",
                 rng: int | jax.Array = 0, bias_resize: str = "timm") -> dict:
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
            f"{model.num_classes}; use num_classes=0, or head='reinit' for a new head")
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
            if (value.ndim == 2 and value.shape[1] == want[1]
                    and window_from_table_length(value.shape[0]) is not None):
                value = resize_relative_position_bias_table(value, window, method=bias_resize)
                resized.append(path)
        if value.shape != timm_shape(want, layout):
            mismatched.append((key, tuple(value.shape), timm_shape(want, layout)))
            continue
        loaded[path] = array_to_flax(value, layout).astype(target[path].dtype)

    missing = [path for path in target if path not in present
               and not (head in ("reinit", "drop") and path.startswith("head/"))]
    if unexpected or missing or mismatched:
        raise ConversionError(_problem_report(model, head, missing, unexpected, mismatched,
                                              target, hf_transformers.key_namer(state_dict)))
    if resized:
        logger.info("resized %d relative position bias tables to the model's windows (%s)",
                    len(resized), bias_resize)

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
        lines += [f"    {name(key)}: checkpoint {have}, model expects {want}"
                  for key, have, want in mismatched]
    head_involved = any(key.startswith("head.") for key, *_ in unexpected + mismatched) or any(
        path.startswith("head/") for path in missing)
    if head_involved and head == "keep":
        lines.append(
            "  hint: the classifier head does not match; pass head='reinit' (CLI: "
            "--reinit-head) for a fresh head with num_classes outputs, or head='drop' "
            "(CLI: --drop-head) with num_classes=0 for a headless model")
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


def save_timm_safetensors(params: Mapping[str, Any], path: str | os.PathLike, *,
                          model: SwinTransformer | None = None) -> Path:
    """Write `flax_to_timm(params)` as a .safetensors file timm can load (strict=True).

    With `model`, the timm kwargs are stored in the file's metadata
    ('swin_flax.timm_kwargs', JSON).
    """
    from safetensors.numpy import save_file

    path = Path(path)
    metadata = {"format": "pt"}
    if model is not None:
        metadata["swin_flax.timm_kwargs"] = json.dumps(timm_model_kwargs(model))
    save_file(flax_to_timm(params), str(path), metadata=metadata)
    return path


# --------------------------------------------------------------------------------------
# The whole import path.

class Imported(NamedTuple):
    model: SwinTransformer
    params: dict
    class_names: list[str] | None  # a transformers config.json's id2label, if it names them


def import_weights(source: str | os.PathLike, *, img_size: int | None = None,
                   num_classes: int | None = None, window_size: int | None = None,
                   head: str = "keep", bias_resize: str = "timm", rng: int = 0,
                   use_ema: bool = False) -> Imported:
    """Read `source` (see `load_state_dict`), build the matching model and convert.

    The architecture comes from the weights (`infer_architecture`) and, for a transformers
    directory or hub repo, its config.json (which must agree with them); `img_size` and
    `window_size` may be changed (bias tables are resampled), `num_classes` only together
    with head='reinit' (or num_classes=0 with head='drop').
    """
    if head not in HEAD_MODES:
        raise UserInputError(f"head must be one of {HEAD_MODES}, got {head!r}")
    weights, config_path = locate(source)
    config = None if config_path is None else hf_transformers.read_config(config_path, source)
    raw = read_file(weights, use_ema=use_ema)
    arch = infer_architecture(raw)
    class_names = None
    if config is not None:
        arch, class_names = hf_transformers.architecture_from_config(config, arch, source)
    ckpt_classes = arch["num_classes"]
    if head == "drop":
        if num_classes not in (None, 0):
            raise ConversionError(
                f"--drop-head/head='drop' makes a headless model; num_classes={num_classes} "
                "contradicts it (use head='reinit' for a new head)")
        num_classes = 0
    elif num_classes is None:
        num_classes = ckpt_classes
    if head == "keep" and num_classes != ckpt_classes:
        have = f"a {ckpt_classes}-class head" if ckpt_classes else "no classifier head"
        raise ConversionError(
            f"{source} has {have} but num_classes={num_classes} was asked for; pass "
            "head='reinit' (CLI: --reinit-head) to replace it with a fresh "
            f"{num_classes}-class head" + (
                "" if num_classes else ", or head='drop' (CLI: --drop-head) to drop it"))
    if head == "reinit" and num_classes == 0:
        raise ConversionError("head='reinit' needs num_classes > 0 (the checkpoint is "
                              "headless: pass num_classes)")
    arch.update(num_classes=num_classes)
    if window_size is not None:
        arch["window_size"] = window_size
        if img_size is None:
            arch["img_size"] = default_img_size(window_size, arch["patch_size"],
                                                len(arch["depths"]))
    if img_size is not None:
        arch["img_size"] = img_size
    try:
        model = SwinTransformer(**arch)
    except ValueError as e:
        raise ConversionError(f"cannot build a Swin model for {source}: {e}") from None
    params = timm_to_flax(raw, model, head=head, rng=rng, bias_resize=bias_resize)
    return Imported(model, params, class_names if head == "keep" else None)


def convert(source: str | os.PathLike, out_dir: str | os.PathLike, *,
            img_size: int | None = None, num_classes: int | None = None,
            window_size: int | None = None, head: str = "keep", overwrite: bool = False,
            bias_resize: str = "timm", rng: int = 0, use_ema: bool = False
            ) -> tuple[SwinTransformer, dict]:
    """`import_weights(source, ...)`, written as an orbax checkpoint to `out_dir`.

    `load_checkpoint(out_dir)` gives the model and parameters back,
    `checkpoint_io.load_class_names(out_dir)` the class names of a transformers config.json.
    """
    from swin_flax import checkpoint_io

    checkpoint_io.check_writable(out_dir, overwrite=overwrite)  # fail before the slow part
    model, params, class_names = import_weights(
        source, img_size=img_size, num_classes=num_classes, window_size=window_size, head=head,
        bias_resize=bias_resize, rng=rng, use_ema=use_ema)
    checkpoint_io.save_checkpoint(out_dir, model, params, overwrite=overwrite,
                                  class_names=class_names)
    return model, params


__all__ = [
    "ConversionError", "KEY_TABLE", "load_state_dict", "locate", "to_timm_layout",
    "infer_architecture", "default_img_size", "resize_relative_position_bias_table",
    "timm_to_flax", "flax_to_timm", "timm_model_kwargs", "save_timm_safetensors", "Imported",
    "import_weights", "convert",
]

