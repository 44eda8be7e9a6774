"""Hugging Face transformers' config.json for Swin: the architecture it describes (checked
against the weights) and the one written beside exported weights."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swin_flax.errors import ConversionError
from swin_flax.model.swin import LAYER_NORM_EPS, SwinTransformer

_CONFIG_FIELDS = {  # SwinTransformer field: config.json field
    "patch_size": "patch_size",
    "in_chans": "num_channels",
    "embed_dim": "embed_dim",
    "depths": "depths",
    "num_heads": "num_heads",
    "window_size": "window_size",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
}


def read_config(path: Path, source: str) -> dict | None:
    """The transformers Swin config.json at `path`; None for another library's (timm's has
    no model_type). Another transformers model (model_type 'vit', ...) is an error."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path} is not a readable JSON file ({e})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        return None
    if config["model_type"] != "swin":
        raise ConversionError(
            f"{source}: config.json has model_type {config['model_type']!r}: a transformers "
            f"{config['model_type']} model, not a Swin Transformer (model_type 'swin')"
        )
    return config


def _square(value: Any, name: str, source: str) -> int:
    """transformers allows (height, width) pairs; swin_flax models are square."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ConversionError(
                f"{source}: config.json has a non-square {name} {value}; "
                "swin_flax models are square"
            )
        value = value[0]
    return int(value)


def architecture_from_config(
    config: Mapping[str, Any], inferred: Mapping[str, Any], source: str
) -> tuple[dict, list[str] | None]:
    """(SwinTransformer fields, class names or None) from config.json and the weights.

    `config` is `read_config`'s, `inferred` is `infer_architecture` of the weights.
    config.json adds what the weights do not hold (img_size, the class names of id2label);
    every field both hold must agree.
    """
    unsupported = [
        f"{name}={config[name]!r}"
        for name, ok in (
            ("use_absolute_embeddings", False),
            ("hidden_act", "gelu"),
            ("layer_norm_eps", LAYER_NORM_EPS),
        )
        if name in config and config[name] != ok
    ]
    if unsupported:
        raise ConversionError(
            f"{source}: config.json has {', '.join(unsupported)}; swin_flax "
            "computes timm's Swin (no absolute position embedding, exact "
            f"GELU, LayerNorm eps {LAYER_NORM_EPS})"
        )

    from_config = {field: config[name] for field, name in _CONFIG_FIELDS.items() if name in config}
    from_config["patch_size"] = _square(from_config.get("patch_size", 4), "patch_size", source)
    for field in ("depths", "num_heads"):
        if field in from_config:
            from_config[field] = tuple(from_config[field])
    disagree = [
        f"{field} {value!r} in config.json, {inferred[field]!r} in the weights"
        for field, value in from_config.items()
        if value != inferred[field]
    ]
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    if names and inferred["num_classes"] and len(names) != inferred["num_classes"]:
        disagree.append(
            f"{len(names)} labels in config.json (id2label), "
            f"{inferred['num_classes']} classifier rows in the weights"
        )
    if disagree:
        raise ConversionError(
            f"{source}: config.json disagrees with the weights: " + "; ".join(disagree)
        )

    arch = dict(inferred)
    if "image_size" in config:
        arch["img_size"] = _square(config["image_size"], "image_size", source)
    default = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    return arch, (names if inferred["num_classes"] and not default else None)


def transformers_config(model: SwinTransformer, class_names=None) -> dict:
    """config.json of `model` for transformers' SwinConfig."""
    names = list(class_names) if class_names else [f"LABEL_{i}" for i in range(model.num_classes)]
    if len(names) != model.num_classes:
        raise ConversionError(
            f"{len(names)} class names for a model with {model.num_classes} classes"
        )
    return {
        "architectures": ["SwinForImageClassification"],
        "model_type": "swin",
        "image_size": model.img_size,
        "patch_size": model.patch_size,
        "num_channels": model.in_chans,
        "embed_dim": model.embed_dim,
        "depths": list(model.depths),
        "num_heads": list(model.num_heads),
        "window_size": model.window_size,
        "mlp_ratio": model.mlp_ratio,
        "qkv_bias": model.qkv_bias,
        "hidden_act": "gelu",
        "layer_norm_eps": LAYER_NORM_EPS,
        "use_absolute_embeddings": False,
        "hidden_dropout_prob": model.drop_rate,
        "attention_probs_dropout_prob": model.attn_drop_rate,
        "drop_path_rate": model.drop_path_rate,
        "num_labels": model.num_classes,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
    }
