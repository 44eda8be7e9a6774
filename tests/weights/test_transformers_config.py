"""transformers' config.json for Swin (`swin_flax.weights.transformers_config`): written
from a model, read back into the same architecture, and checked against the weights."""

import json

import pytest

import swin_flax
from swin_flax.errors import ConversionError
from swin_flax.weights import transformers_config as T


def inferred_of(model) -> dict:
    """What `infer_architecture` reads from this model's weights (all but img_size)."""
    fields = ("patch_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size")
    return {
        **{f: getattr(model, f) for f in fields},
        "mlp_ratio": model.mlp_ratio,
        "qkv_bias": model.qkv_bias,
        "num_classes": model.num_classes,
    }


def test_a_written_config_reads_back_as_the_same_architecture_and_class_names():
    model = swin_flax.create_model("swin_pico", num_classes=2)
    config = T.transformers_config(model, ["cat", "dog"])
    assert config["model_type"] == "swin" and config["id2label"] == {"0": "cat", "1": "dog"}
    arch, names = T.architecture_from_config(config, inferred_of(model), "pico")
    read_back = swin_flax.SwinTransformer(
        swin_flax.SwinConfig(**arch, drop_path_rate=model.drop_path_rate)
    )
    assert read_back.config == model.config  # all but the drop-path rate, which is training
    assert names == ["cat", "dog"]
    _, default_names = T.architecture_from_config(
        T.transformers_config(model), inferred_of(model), "pico"
    )
    assert default_names is None  # LABEL_0, LABEL_1: no names worth keeping
    with pytest.raises(ConversionError, match="3 class names for a model with 2 classes"):
        T.transformers_config(model, ["a", "b", "c"])


def test_a_config_that_disagrees_with_the_weights_or_needs_other_maths_is_refused():
    model = swin_flax.create_model("swin_pico", num_classes=2)
    config = T.transformers_config(model)
    with pytest.raises(ConversionError, match=r"embed_dim 64 in config.json, 32 in the weights"):
        T.architecture_from_config({**config, "embed_dim": 64}, inferred_of(model), "pico")
    with pytest.raises(ConversionError, match="use_absolute_embeddings=True"):
        T.architecture_from_config(
            {**config, "use_absolute_embeddings": True}, inferred_of(model), "pico"
        )
    with pytest.raises(ConversionError, match=r"non-square patch_size \[2, 4\]"):
        T.architecture_from_config({**config, "patch_size": [2, 4]}, inferred_of(model), "pico")
    square = T.architecture_from_config({**config, "image_size": [32, 32]}, inferred_of(model), "p")
    assert square[0]["img_size"] == 32


def test_only_a_transformers_swin_config_is_read(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"architecture": "swin_tiny_patch4_window7_224"}))  # timm's
    assert T.read_config(path, "repo") is None
    path.write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ConversionError, match="repo: config.json has model_type 'vit'"):
        T.read_config(path, "repo")
    path.write_text("{broken")
    with pytest.raises(ConversionError, match="is not a readable JSON file"):
        T.read_config(path, "repo")
    path.write_text(json.dumps({"model_type": "swin", "embed_dim": 96}))
    assert T.read_config(path, "repo")["embed_dim"] == 96
