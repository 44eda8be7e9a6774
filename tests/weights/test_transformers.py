"""Hugging Face transformers Swin <-> swin_flax: parity, both namings, export, bad input.

CPU, float32, matmul precision 'highest'. The transformers models have random weights
perturbed away from their init (parity_report.make_hf_model); they are built locally, nothing
is downloaded. `pytest -s` shows the measured differences; `python tests/weights/parity_report.py`
prints them as a table.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from swin_flax import SwinConfig
from swin_flax.weights import importer, layouts
from swin_flax.weights import timm as C
from swin_flax.weights import transformers as H
from swin_flax.weights.checkpoint import load_checkpoint, load_class_names
from tests.weights import parity_report as parity

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
LOGIT_TOL = 1e-4  # measured <= 1e-6 (see parity_report.py)
SMALL = "odd_2232_128_w4"  # the configuration of the tests that are not about parity


@pytest.fixture(scope="module")
def hf_models():
    """Perturbed transformers models by configuration name, built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = parity.make_hf_model(parity.HF_CONFIGS[name])
        return cache[name]

    return get


@pytest.fixture(scope="module")
def imported(hf_models, tmp_path_factory):
    """(model, params) imported from each configuration's save_pretrained directory."""
    cache = {}

    def get(name):
        if name not in cache:
            directory = tmp_path_factory.mktemp(name)
            source = parity.write_hf_checkpoint(hf_models(name), directory / "hub", "hub")
            cache[name] = importer.import_weights(source)[:2]
        return cache[name]

    return get


def _images(name, seed=0):
    return parity.random_images(dict(img_size=parity.HF_CONFIGS[name]["image_size"]), seed)


def _flax_logits(model, params, images):
    return parity.flax_forward(model, params, images)[0]


def _expected_arch(name):
    kwargs = parity.HF_CONFIGS[name]
    return dict(
        img_size=kwargs["image_size"],
        patch_size=4,
        in_chans=3,
        embed_dim=kwargs["embed_dim"],
        depths=kwargs["depths"],
        num_heads=kwargs["num_heads"],
        window_size=kwargs["window_size"],
        mlp_ratio=4.0,
        qkv_bias=True,
        num_classes=kwargs["num_labels"],
    )


# --------------------------------------------------------------------------------------
# Parity with transformers' own forward.


@pytest.mark.slow
@pytest.mark.parametrize("naming", parity.HF_NAMINGS)
@pytest.mark.parametrize("name", list(parity.HF_CONFIGS))
def test_import_matches_transformers(name, naming, hf_models, imported, tmp_path):
    hf_model = hf_models(name)
    if naming == "hub":  # a save_pretrained directory: config.json + hub-file names
        model, params = imported(name)
    else:  # state_dict() as a bare file: transformers 5 names, architecture inferred
        source = parity.write_hf_checkpoint(hf_model, tmp_path, naming)
        model, params, class_names = importer.import_weights(source)
        assert class_names is None
    assert {k: getattr(model, k) for k in _expected_arch(name)} == _expected_arch(name)
    images = _images(name)
    diff = np.abs(_flax_logits(model, params, images) - parity.hf_logits(hf_model, images)).max()
    print(
        f"\n[parity] transformers {name} ({naming} names) -> swin_flax: max |logit diff| {diff:.2e}"
    )
    assert diff <= LOGIT_TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", list(parity.HF_CONFIGS))
def test_export_loads_strictly_in_transformers_and_gives_our_logits(name, imported, tmp_path):
    model, params = imported(name)
    diff = parity.hf_export_diff(
        model, parity.perturbed_params(params), tmp_path / "out", _images(name, seed=1)
    )
    print(f"\n[parity] export {name} -> transformers: max |logit diff| {diff:.2e}")
    assert diff <= LOGIT_TOL


# --------------------------------------------------------------------------------------
# The key table.


def test_key_table_maps_both_namings_and_back():
    for row in H.KEY_TABLE:
        fields = dict(i=2, j=5, p="bias")
        timm_key = row.timm.format(**dict(fields, i=2 + row.stage_shift))
        for template in (row.hub, row.v5):
            key = template.format(**fields)
            key = key if key.startswith(H.CLASSIFIER) else H.PREFIX + key
            assert H._match(key) == (row, timm_key), key
            assert H._match(H._local(key)) == (row, timm_key)  # a bare SwinModel
    assert H._match("swin.classifier.weight") is None
    assert H._match("swin.encoder.layers.0.blocks.0.attention.self.relative_position_index") is None


def test_qkv_fused_in_timm_order_and_split_back():
    rs = np.random.RandomState(0)
    q, k, v = (rs.randn(8, 8).astype(np.float32) for _ in range(3))
    base = "swin.encoder.layers.1.blocks.0.attention."
    for names in (("self.query", "self.key", "self.value"), ("q_proj", "k_proj", "v_proj")):
        sd = {f"{base}{n}.weight": w for n, w in zip(names, (q, k, v))}
        sd[f"{base}self.relative_position_index"] = np.zeros((49, 49), np.int64)
        out = H.to_timm_layout(sd)
        assert list(out) == ["layers.1.blocks.0.attn.qkv.weight"]
        np.testing.assert_array_equal(
            out["layers.1.blocks.0.attn.qkv.weight"], np.concatenate([q, k, v])
        )
    back = H.from_timm_layout(out)
    assert sorted(back) == sorted(f"{base}self.{n}.weight" for n in ("key", "query", "value"))
    np.testing.assert_array_equal(back[f"{base}self.key.weight"], k)


def test_downsample_moves_to_the_end_of_the_previous_stage():
    sd = {
        "swin.encoder.layers.0.downsample.reduction.weight": np.zeros((4, 8)),
        "encoder.layers.2.downsample.norm.weight": np.zeros(8),
    }
    assert sorted(H.to_timm_layout(sd)) == [
        "layers.1.downsample.reduction.weight",
        "layers.3.downsample.norm.weight",
    ]


def test_headless_swin_model_without_prefix(hf_models):
    sd = parity.timm_state_dict(hf_models(SMALL).swin)  # SwinModel: no 'swin.', no classifier
    assert not any(k.startswith("swin.") for k in sd)
    assert layouts.infer_architecture(sd) == dict(_expected_arch(SMALL), num_classes=0)


# --------------------------------------------------------------------------------------
# config.json and class names.


@pytest.mark.slow
def test_class_names_from_id2label_are_stored_and_exported(tmp_path):
    names = ["cat", "dog", "owl", "eel", "bee"]
    kwargs = dict(
        parity.HF_CONFIGS[SMALL],
        num_labels=5,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    parity.make_hf_model(kwargs).save_pretrained(tmp_path / "hf")
    importer.convert(tmp_path / "hf", tmp_path / "ckpt")
    assert load_class_names(tmp_path / "ckpt") == names
    model, params = load_checkpoint(tmp_path / "ckpt")
    H.save_transformers(params, model, tmp_path / "back", class_names=names)
    config = transformers.SwinConfig.from_pretrained(tmp_path / "back")
    assert config.id2label == dict(enumerate(names)) and config.num_labels == 5
    # A new head has new classes: the names are not kept.
    importer.convert(tmp_path / "hf", tmp_path / "new_head", num_classes=3, head="reinit")
    assert load_class_names(tmp_path / "new_head") is None


def test_config_that_disagrees_with_the_weights(hf_models, tmp_path):
    source = parity.write_hf_checkpoint(hf_models(SMALL), tmp_path / "hf", "hub")
    config = json.loads((source / "config.json").read_text())
    config.update(depths=[2, 2, 6, 2], embed_dim=96)
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        C.ConversionError,
        match=r"config\.json disagrees with the weights: "
        r"embed_dim 96 in config\.json, 24 in the weights; depths \(2, 2, 6, 2\) "
        r"in config\.json, \(2, 2, 3, 2\) in the weights",
    ):
        importer.import_weights(source)
    config.update(depths=[2, 2, 3, 2], embed_dim=24, use_absolute_embeddings=True)
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(C.ConversionError, match="use_absolute_embeddings=True"):
        importer.import_weights(source)


def test_vit_checkpoint_is_not_a_swin(tmp_path):
    vit = transformers.ViTForImageClassification(
        transformers.ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            num_labels=3,
        )
    )
    vit.save_pretrained(tmp_path / "vit")
    with pytest.raises(
        C.ConversionError,
        match=r"config\.json has model_type 'vit': a "
        r"transformers vit model, not a Swin Transformer",
    ):
        importer.convert(tmp_path / "vit", tmp_path / "out")
    with pytest.raises(
        C.ConversionError,
        match=r"a transformers 'vit' model \(first keys: "
        r"classifier\.bias, .*not a Swin Transformer",
    ):
        importer.import_weights(tmp_path / "vit" / "model.safetensors")
    assert not (tmp_path / "out").exists()


def test_problems_are_reported_together_in_transformers_names(hf_models):
    sd = parity.timm_state_dict(hf_models(SMALL))  # transformers 5 names
    arch = layouts.infer_architecture(sd)
    del sd["swin.encoder.layers.1.blocks.0.layernorm_after.bias"]
    del sd["swin.encoder.layers.2.blocks.1.attention.k_proj.weight"]
    sd["swin.embeddings.position_embeddings"] = np.zeros((1, 1024, 24), np.float32)
    sd["swin.encoder.layers.0.blocks.1.mlp.fc2.weight"] = np.zeros((24, 95), np.float32)
    with pytest.raises(C.ConversionError) as err:
        C.timm_to_flax(sd, C.SwinTransformer(SwinConfig(**arch)))
    message = str(err.value)
    assert (
        "missing from the checkpoint (2):\n"
        "    swin.encoder.layers.1.blocks.0.layernorm_after.bias (model expects (48,))\n"
        "    swin.encoder.layers.2.blocks.1.attention.{q,k,v}_proj.weight "
        "(model expects (288, 96))"
    ) in message
    assert "    swin.embeddings.position_embeddings (1, 1024, 24)" in message
    assert "    swin.encoder.layers.2.blocks.1.attention.q_proj.weight (96, 96)" in message
    assert (
        "shape mismatches (1):\n    swin.encoder.layers.0.blocks.1.mlp.fc2.weight: "
        "checkpoint (24, 95), model expects (24, 96)"
    ) in message


def test_export_refuses_a_stage_smaller_than_the_window(tmp_path):
    model = C.SwinTransformer(
        SwinConfig(**parity.CONFIGS["pico_32"])
    )  # stage 3: 2x2 tokens, window 4
    with pytest.raises(
        C.ConversionError,
        match=r"stage 3 .* 2x2 tokens, smaller than its "
        r"window 4; transformers' Swin cannot run that",
    ):
        H.save_transformers({}, model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# Hub repos, offline.


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hub_repo_is_read_from_the_downloaded_files(weights, monkeypatch, hf_models, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors.numpy import load_file

    hf_models(SMALL).save_pretrained(tmp_path / "repo")
    if weights == "pytorch_model.bin":  # older repos: hub-file names in a torch pickle
        state = load_file(str(tmp_path / "repo" / "model.safetensors"))
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "repo" / weights)
        (tmp_path / "repo" / "model.safetensors").unlink()
    calls = []

    def download(repo_id, filename):
        calls.append(filename)
        assert repo_id == "microsoft/swin-test"
        if not (tmp_path / "repo" / filename).is_file():
            raise EntryNotFoundError(f"{filename} is not in {repo_id}")
        return str(tmp_path / "repo" / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    model, params, _ = importer.import_weights("microsoft/swin-test")
    tried = ["model.safetensors"] + (["pytorch_model.bin"] if weights.endswith(".bin") else [])
    assert calls == ["config.json"] + tried
    expected = importer.import_weights(tmp_path / "repo")
    assert model == expected.model
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, expected.params)


def test_hub_repo_without_weights(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    def download(repo_id, filename):
        raise EntryNotFoundError(f"{filename} is not in {repo_id}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(
        C.ConversionError,
        match=r"could not download model\.safetensors or "
        r"pytorch_model\.bin for 'owner/no-weights'",
    ):
        importer.import_weights("owner/no-weights")
    with pytest.raises(C.ConversionError, match="no such file or directory, and not a hub name"):
        importer.import_weights(tmp_path / "missing" / "model.safetensors")


# --------------------------------------------------------------------------------------
# The command line.


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, str(REPO / "convert_timm_weights.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cli_imports_a_transformers_directory_and_exports_one(hf_models, tmp_path):
    hf_models(SMALL).save_pretrained(tmp_path / "hf")
    result = _cli(tmp_path / "hf", tmp_path / "ckpt")
    assert result.returncode == 0, result.stderr
    assert "depths (2, 2, 3, 2)" in result.stdout and "128 px" in result.stdout
    result = _cli("--export", tmp_path / "ckpt", tmp_path / "back", "--format", "transformers")
    assert result.returncode == 0, result.stderr
    assert "SwinForImageClassification.from_pretrained(" in result.stdout
    loaded, info = transformers.SwinForImageClassification.from_pretrained(
        tmp_path / "back", output_loading_info=True
    )
    assert not any(info.values()), info
    images = _images(SMALL, seed=3)
    np.testing.assert_allclose(
        parity.hf_logits(loaded.eval(), images),
        parity.hf_logits(hf_models(SMALL), images),
        rtol=0,
        atol=1e-6,
    )
    result = _cli(tmp_path / "hf", tmp_path / "other", "--format", "transformers")
    assert result.returncode == 2 and "--format is for --export" in result.stderr
