"""timm <-> swin_flax conversion: parity, the CLI, checkpoints, and every bad input.

CPU, float32, matmul precision 'highest'. timm models have random weights perturbed
away from timm's init (see parity_report.make_timm_model), so that a swapped scale and
bias or a transposed kernel cannot hide. `pytest -s` shows the measured differences;
`python tests/weights/parity_report.py` prints them as a table.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import swin_flax
from swin_flax.errors import CheckpointError
from swin_flax.weights import bias_table, importer, layouts, sources, timm_keys
from swin_flax.weights import timm as C
from swin_flax.weights.checkpoint import load_checkpoint, save_checkpoint
from tests.weights import parity_report as parity

jax.config.update("jax_default_matmul_precision", "highest")

torch = pytest.importorskip("torch")
timm_swin = pytest.importorskip("timm.models.swin_transformer")
from timm.layers import resize_rel_pos_bias_table, resize_rel_pos_bias_table_simple  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOGIT_TOL = 1e-4  # measured ~1e-6 (see parity_report.py)
FEATURE_TOL = 1e-4  # absolute, features up to ~10 in size; measured <= 1.5e-5


@pytest.fixture(scope="module")
def timm_models():
    """Perturbed timm models by configuration name, built once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = parity.make_timm_model(parity.CONFIGS[name])
        return cache[name]

    return get


def _timm_logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def _flax_logits(model, params, images_nhwc):
    return parity.flax_forward(model, params, images_nhwc)[0]  # one compile per architecture


def _pico_state(timm_models):
    return parity.timm_state_dict(timm_models("pico_32"))


# --------------------------------------------------------------------------------------
# Parity with timm.


@pytest.mark.parametrize("name", list(parity.CONFIGS) + [parity.MICROSOFT])
def test_logits_and_every_stage_match_timm(name, timm_models):
    kwargs = parity.CONFIGS["swin_t_224" if name == parity.MICROSOFT else name]
    logit_diff, feature_diffs = parity.measure(
        name, timm_models("swin_t_224" if name == parity.MICROSOFT else name)
    )
    print(
        f"\n[parity] {name}: max |logit diff| {logit_diff:.2e}, max |feature diff| "
        + ", ".join(f"{k} {v:.2e}" for k, v in feature_diffs.items())
    )
    assert logit_diff <= LOGIT_TOL
    assert set(feature_diffs) == {f"stage_{i}" for i in range(len(kwargs["depths"]))} | {"norm"}
    assert max(feature_diffs.values()) <= FEATURE_TOL


@pytest.mark.parametrize("name", list(parity.CONFIGS))
def test_architecture_inferred_from_weights(name, timm_models):
    arch = layouts.infer_architecture(parity.timm_state_dict(timm_models(name)))
    expected = dict(patch_size=4, in_chans=3, mlp_ratio=4.0, qkv_bias=True)
    expected.update(parity.CONFIGS[name])
    assert arch == expected


def test_parameter_tree_equals_timm_param_count(timm_models):
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(_pico_state(timm_models)))
    params = C.timm_to_flax(_pico_state(timm_models), model)
    timm_count = sum(p.numel() for p in timm_models("pico_32").parameters())
    assert swin_flax.count_params(params) == timm_count


# --------------------------------------------------------------------------------------
# Key table and layouts.


def test_key_table_maps_both_ways():
    for timm_template, flax_template, layout in timm_keys.KEY_TABLE:
        key, path = timm_template.format(i=3, j=11), flax_template.format(i=3, j=11)
        assert timm_keys.timm_key_to_flax_path(key) == (path, layout)
        assert timm_keys.flax_path_to_timm_key(path) == (key, layout)
    assert timm_keys.timm_key_to_flax_path("layers.0.blocks.0.attn.relative_position_index") is None
    assert timm_keys.timm_key_to_flax_path("head.fc.weight.extra") is None


def test_microsoft_layout_is_renamed_and_buffers_dropped():
    ms = {
        "layers.0.downsample.reduction.weight": np.zeros((192, 384)),
        "layers.2.downsample.norm.weight": np.ones(1536),
        "layers.1.blocks.1.attn_mask": np.zeros((4, 49, 49)),
        "layers.0.blocks.0.attn.relative_position_index": np.zeros((49, 49)),
        "head.weight": np.zeros((10, 768)),
        "head.bias": np.zeros(10),
    }
    out = layouts.to_timm_layout({f"module.{k}": v for k, v in ms.items()})
    assert sorted(out) == [
        "head.fc.bias",
        "head.fc.weight",
        "layers.1.downsample.reduction.weight",
        "layers.3.downsample.norm.weight",
    ]
    assert layouts.to_timm_layout(out).keys() == out.keys()  # idempotent on timm layout


def test_flax_to_timm_inverts_timm_to_flax_exactly(timm_models):
    state = _pico_state(timm_models)
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(state))
    # A torch state_dict is accepted as it is.
    back = timm_keys.flax_to_timm(C.timm_to_flax(timm_models("pico_32").state_dict(), model))
    expected = {k: v for k, v in state.items() if "relative_position_index" not in k}
    assert back.keys() == expected.keys()
    for key, value in expected.items():
        assert back[key].dtype == np.float32 and back[key].flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(back[key], value, err_msg=key)


# --------------------------------------------------------------------------------------
# Export to timm.


def test_export_loads_in_timm_strict_and_gives_the_same_logits(timm_models, tmp_path):
    state = _pico_state(timm_models)
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(state))
    params = C.timm_to_flax(state, model)
    # Flax-side weights of their own (as after fine-tuning), not timm's.
    rs = np.random.RandomState(1)
    params = jax.tree_util.tree_map(
        lambda x: np.asarray(x) + rs.normal(0, 0.1, x.shape).astype(np.float32), params
    )
    path = C.save_timm_safetensors(params, tmp_path / "pico.safetensors", model=model)

    from safetensors import safe_open
    from safetensors.torch import load_file

    kwargs = C.timm_model_kwargs(model)
    with safe_open(str(path), framework="np") as f:
        assert f.metadata()["swin_flax.timm_kwargs"] == __import__("json").dumps(kwargs)
    timm_model = timm_swin.SwinTransformer(**kwargs).eval()
    timm_model.load_state_dict(load_file(str(path)), strict=True)
    images = parity.random_images(parity.CONFIGS["pico_32"], seed=2)
    diff = np.abs(_flax_logits(model, params, images) - _timm_logits(timm_model, images)).max()
    print(f"\n[parity] export pico_32 -> timm: max |logit diff| {diff:.2e}")
    assert diff <= LOGIT_TOL


# --------------------------------------------------------------------------------------
# Relative position bias tables for another window.


@pytest.mark.parametrize("old,new", [(7, 12), (12, 7), (7, 8), (4, 2), (2, 7)])
def test_bias_table_resize_matches_timm(old, new):
    table = np.random.RandomState(old * 100 + new).randn((2 * old - 1) ** 2, 3).astype(np.float32)
    shape = ((2 * new - 1) ** 2, 3)
    ours = bias_table.resize_relative_position_bias_table(table, new)
    ref = resize_rel_pos_bias_table(torch.from_numpy(table), (new, new), shape).numpy()
    assert ours.shape == shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    ours = bias_table.resize_relative_position_bias_table(table, new, method="bicubic")
    ref = resize_rel_pos_bias_table_simple(torch.from_numpy(table), (new, new), shape).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)  # values ~N(0, 1), float32 torch
    assert bias_table.resize_relative_position_bias_table(table, old) is table


def test_window7_checkpoint_into_window12_model_matches_timm():
    small = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), num_classes=10)
    source = parity.make_timm_model(dict(small, img_size=224, window_size=7), seed=5)
    state = parity.timm_state_dict(source)
    target = timm_swin.SwinTransformer(**small, img_size=384, window_size=12).eval()
    target.load_state_dict(
        timm_swin.checkpoint_filter_fn({k: torch.from_numpy(v) for k, v in state.items()}, target),
        strict=True,
    )

    model = swin_flax.SwinTransformer(**small, img_size=384, window_size=12)
    params = C.timm_to_flax(state, model)
    table = params["layers_0"]["blocks_0"]["attn"]["relative_position_bias_table"]
    assert table.shape == (23 * 23, 1)
    images = parity.random_images(dict(img_size=384), seed=3)
    diff = np.abs(_flax_logits(model, params, images) - _timm_logits(target, images)).max()
    print(f"\n[parity] window 7 -> 12 at 384 (tables resized): max |logit diff| {diff:.2e}")
    assert diff <= LOGIT_TOL


# --------------------------------------------------------------------------------------
# The classifier head.


def test_head_reinit_gives_a_fresh_init_head_and_keeps_the_rest(timm_models):
    state = _pico_state(timm_models)
    arch = layouts.infer_architecture(state)
    kept = C.timm_to_flax(state, swin_flax.SwinTransformer(**arch))
    model = swin_flax.SwinTransformer(**dict(arch, num_classes=5))
    params = C.timm_to_flax(state, model, head="reinit", rng=4)
    kernel = np.asarray(params["head"]["kernel"])
    assert kernel.shape == (256, 5)
    # The model's init: truncated normal, std 0.02 (cut at 2 std), zero bias.
    assert np.abs(kernel).max() <= 0.04 and 0.01 < kernel.std() < 0.025
    np.testing.assert_array_equal(params["head"]["bias"], np.zeros(5))

    def reinit_kernel(rng):
        return np.asarray(C.timm_to_flax(state, model, head="reinit", rng=rng)["head"]["kernel"])

    np.testing.assert_array_equal(reinit_kernel(4), kernel)
    assert not np.array_equal(reinit_kernel(5), kernel)
    same_classes = C.timm_to_flax(state, swin_flax.SwinTransformer(**arch), head="reinit")
    assert not np.allclose(same_classes["head"]["kernel"], kept["head"]["kernel"])
    np.testing.assert_array_equal(params["norm"]["scale"], kept["norm"]["scale"])
    np.testing.assert_array_equal(
        params["layers_3"]["blocks_1"]["mlp"]["fc2"]["kernel"],
        kept["layers_3"]["blocks_1"]["mlp"]["fc2"]["kernel"],
    )


def test_head_drop_gives_timm_pooled_features(timm_models):
    state = _pico_state(timm_models)
    model = swin_flax.SwinTransformer(**dict(layouts.infer_architecture(state), num_classes=0))
    params = C.timm_to_flax(state, model, head="drop")
    assert "head" not in params
    images = parity.random_images(parity.CONFIGS["pico_32"])
    timm_model = timm_models("pico_32")
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        ref = timm_model.forward_head(timm_model.forward_features(x), pre_logits=True).numpy()
    assert np.abs(_flax_logits(model, params, images) - ref).max() <= LOGIT_TOL


def test_head_options_are_explicit(timm_models, tmp_path):
    state = _pico_state(timm_models)
    arch = layouts.infer_architecture(state)
    with pytest.raises(
        C.ConversionError,
        match=r"(?s)head\.fc\.weight: checkpoint \(10, 256\), "
        r"model expects \(5, 256\).*head='reinit'",
    ):
        C.timm_to_flax(state, swin_flax.SwinTransformer(**dict(arch, num_classes=5)))
    with pytest.raises(C.ConversionError, match=r"(?s)unexpected.*head\.fc\.weight.*head='drop'"):
        C.timm_to_flax(state, swin_flax.SwinTransformer(**dict(arch, num_classes=0)))
    with pytest.raises(C.ConversionError, match="head='drop' builds a headless model"):
        C.timm_to_flax(state, swin_flax.SwinTransformer(**arch), head="drop")
    path = tmp_path / "pico.safetensors"
    from safetensors.numpy import save_file

    save_file(state, str(path))
    with pytest.raises(
        C.ConversionError,
        match=r"has a 10-class head but num_classes=100 .*"
        r"--reinit-head",
    ):
        importer.convert(path, tmp_path / "out", num_classes=100)
    assert not (tmp_path / "out").exists()
    model, params = importer.convert(path, tmp_path / "out", num_classes=100, head="reinit")
    assert model.num_classes == 100 and params["head"]["kernel"].shape == (256, 100)


# --------------------------------------------------------------------------------------
# Checkpoints.


def test_checkpoint_roundtrip_with_dtype_override(timm_models, tmp_path):
    state = _pico_state(timm_models)
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(state))
    params = C.timm_to_flax(state, model)
    save_checkpoint(tmp_path / "ckpt", model, params)
    loaded_model, loaded = swin_flax.load_checkpoint(tmp_path / "ckpt", dtype=jnp.bfloat16)
    assert loaded_model.dtype == jnp.bfloat16
    assert swin_flax.model_config(loaded_model) == swin_flax.model_config(model)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        assert b.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="change the parameter shapes"):
        load_checkpoint(tmp_path / "ckpt", num_classes=3)
    with pytest.raises(CheckpointError, match="already exists.*--overwrite"):
        save_checkpoint(tmp_path / "ckpt", model, params)
    save_checkpoint(tmp_path / "ckpt", model, params, overwrite=True)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a swin_flax checkpoint.*'params'"):
        load_checkpoint(tmp_path / "notes")
    model = swin_flax.SwinTransformer(**parity.CONFIGS["pico_32"])
    params = jax.tree_util.tree_map(
        lambda x: jnp.zeros(x.shape, x.dtype), swin_flax.abstract_params(model)
    )
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "notes", model, params, overwrite=True)
    assert (tmp_path / "notes" / "a.txt").exists()
    other = swin_flax.SwinTransformer(**dict(parity.CONFIGS["pico_32"], num_classes=3))
    with pytest.raises(CheckpointError, match="params do not match the model"):
        save_checkpoint(tmp_path / "bad", other, params)


# --------------------------------------------------------------------------------------
# Bad input.


def test_file_that_is_not_a_checkpoint(tmp_path):
    for name in ("weights.pth", "weights.safetensors", "weights.dat"):
        path = tmp_path / name
        path.write_text("this is a text file, not weights\n" * 20)
        with pytest.raises(C.ConversionError, match=rf"{name} is not .*expected"):
            sources.load_state_dict(path)
    with pytest.raises(C.ConversionError, match="no such file or directory, and not a hub name"):
        sources.load_state_dict(tmp_path / "missing.pth")
    with pytest.raises(
        C.ConversionError,
        match="not a Swin Transformer state_dict: no 4-D "
        "'patch_embed.proj.weight' \\(first keys: fc.bias, fc.weight\\)",
    ):
        layouts.infer_architecture({"fc.weight": np.zeros((2, 3)), "fc.bias": np.zeros(2)})


def test_truncated_safetensors(timm_models, tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(_pico_state(timm_models), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        C.ConversionError,
        match=r"model\.safetensors is not a readable "
        r"\.safetensors file .*truncated",
    ):
        sources.load_state_dict(path)


def test_safetensors_and_timm_names_are_read_without_torch(timm_models, tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(_pico_state(timm_models), str(path))
    code = (
        "import sys; from swin_flax.weights.sources import load_state_dict; "
        f"n = len(load_state_dict({str(path)!r})); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(n)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(_pico_state(timm_models))


def test_bfloat16_checkpoints_load_as_float32(timm_models, tmp_path):
    import ml_dtypes
    from safetensors.numpy import save_file

    state = _pico_state(timm_models)
    half = {k: v.astype(ml_dtypes.bfloat16) for k, v in state.items() if v.dtype == np.float32}
    save_file(half, str(tmp_path / "bf16.safetensors"))
    torch.save(
        {k: torch.from_numpy(v).bfloat16() for k, v in state.items() if v.dtype == np.float32},
        tmp_path / "bf16.pth",
    )
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(state))
    for name in ("bf16.safetensors", "bf16.pth"):
        params = C.timm_to_flax(sources.load_state_dict(tmp_path / name), model)
        kernel = params["layers_1"]["blocks_0"]["attn"]["qkv"]["kernel"]
        assert kernel.dtype == jnp.float32
        np.testing.assert_array_equal(
            kernel, half["layers.1.blocks.0.attn.qkv.weight"].astype(np.float32).T
        )


def test_pth_without_torch_installed_names_the_extra(monkeypatch, timm_models, tmp_path):
    path = tmp_path / "pico.pth"
    torch.save(timm_models("pico_32").state_dict(), path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(
        C.ConversionError,
        match=r"pico\.pth needs PyTorch: pip install "
        r"swin_flax\[convert\]",
    ):
        sources.load_state_dict(path)


def test_torch_checkpoint_with_non_tensor_objects(tmp_path):
    path = tmp_path / "train_state.pth"
    import argparse

    torch.save({"model": {"w": torch.zeros(2)}, "config": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(C.ConversionError, match="train_state.pth could not be read .*state_dict"):
        sources.load_state_dict(path)


def test_training_checkpoints_are_unwrapped_as_timm_does(timm_models, tmp_path):
    state = _pico_state(timm_models)
    plain = {k: torch.from_numpy(v) for k, v in state.items()}
    ema = {f"module.{k}": v + 1 for k, v in plain.items()}  # EMA wrappers may keep DDP's prefix
    key = "layers.0.blocks.0.norm1.weight"

    def read(name, use_ema=False):
        return sources.load_state_dict(tmp_path / name, use_ema=use_ema)

    torch.save({"state_dict": plain, "state_dict_ema": ema, "epoch": 3}, tmp_path / "both.pth")
    np.testing.assert_array_equal(read("both.pth")[key], state[key])
    np.testing.assert_array_equal(
        layouts.to_timm_layout(read("both.pth", use_ema=True))[key], state[key] + 1
    )
    torch.save({"model_ema": ema, "epoch": 3}, tmp_path / "ema_only.pth")  # all there is
    np.testing.assert_array_equal(layouts.to_timm_layout(read("ema_only.pth"))[key], state[key] + 1)
    torch.save({"model": plain}, tmp_path / "plain.pth")
    with pytest.raises(
        C.ConversionError,
        match=r"plain\.pth holds no EMA weights .*top-level "
        r"keys: model\); leave out use_ema \(--use-ema\)",
    ):
        read("plain.pth", use_ema=True)
    torch.save({"epoch": 3, "arch": "swin_tiny", "optimizer": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(
        C.ConversionError,
        match=r"meta\.pth holds no tensors \(top-level keys: "
        r"epoch, arch, optimizer\)",
    ):
        read("meta.pth")


def test_missing_unexpected_and_misshapen_keys_in_one_error(timm_models):
    state = _pico_state(timm_models)
    model = swin_flax.SwinTransformer(**layouts.infer_architecture(state))
    del state["layers.1.blocks.0.norm2.bias"]
    state["layers.1.blocks.7.mlp.fc1.weight"] = np.zeros((256, 64), np.float32)
    state["layers.2.blocks.1.attn.qkv.weight"] = np.zeros((384, 127), np.float32)
    with pytest.raises(C.ConversionError) as err:
        C.timm_to_flax(state, model)
    message = str(err.value)
    assert (
        "missing from the checkpoint (1):\n    layers.1.blocks.0.norm2.bias (model expects (64,))"
    ) in message
    assert (
        "unexpected in the checkpoint (1):\n    layers.1.blocks.7.mlp.fc1.weight (256, 64)"
        in message
    )
    assert (
        "shape mismatches (1):\n    layers.2.blocks.1.attn.qkv.weight: checkpoint (384, 127), "
        "model expects (384, 128)"
    ) in message


def test_image_size_the_model_cannot_take(timm_models, tmp_path):
    path = tmp_path / "pico.pth"
    torch.save(timm_models("pico_32").state_dict(), path)
    with pytest.raises(
        C.ConversionError,
        match=r"(?s)cannot build a Swin model for .*pico\.pth.*"
        r"img_size 40 must be divisible by .* 16",
    ):
        importer.convert(path, tmp_path / "out", img_size=40)


def test_timm_name_without_network(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(**kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(
        C.ConversionError,
        match=r"could not download model\.safetensors for "
        r"'swin_tiny_patch4_window7_224\.ms_in1k' .*'timm/swin_tiny_patch4_window7"
        r"_224\.ms_in1k' \(LocalEntryNotFoundError: cannot reach the Hub\).*"
        r"pass their path",
    ):
        importer.convert("swin_tiny_patch4_window7_224.ms_in1k", tmp_path / "out")


def test_timm_name_is_read_from_the_downloaded_safetensors(monkeypatch, timm_models, tmp_path):
    import huggingface_hub
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(_pico_state(timm_models), str(path))
    calls = []
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(path)
    )
    state = sources.load_state_dict("swin_pico_test.in1k")
    assert calls == [dict(repo_id="timm/swin_pico_test.in1k", filename="model.safetensors")]
    assert state.keys() == _pico_state(timm_models).keys()


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


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_cli_converts_and_exports(fmt, timm_models, tmp_path):
    timm_model = timm_models("pico_32")
    source = tmp_path / f"pico.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(timm_model.state_dict(), str(source))
    else:  # original Microsoft layout inside {'model': ...}
        microsoft = parity.to_microsoft_layout(parity.timm_state_dict(timm_model))
        torch.save({"model": {k: torch.from_numpy(v) for k, v in microsoft.items()}}, source)
    out = tmp_path / "ckpt"
    result = _cli(source, out)
    assert result.returncode == 0, result.stderr
    model, params = swin_flax.load_checkpoint(out)
    assert f"architecture: {model.config.describe()}\n" in result.stdout
    assert "depths (2, 2, 2, 2)" in result.stdout and f"{out}" in result.stdout
    images = parity.random_images(parity.CONFIGS["pico_32"], seed=7)
    ref = _timm_logits(timm_model, images)
    assert np.abs(_flax_logits(model, params, images) - ref).max() <= LOGIT_TOL

    if fmt == "safetensors":  # and back to timm through the CLI
        from safetensors.torch import load_file

        exported = tmp_path / "export.safetensors"
        result = _cli("--export", out, exported)
        assert result.returncode == 0, result.stderr
        assert "SwinTransformer(**{" in result.stdout
        again = timm_swin.SwinTransformer(**C.timm_model_kwargs(model)).eval()
        again.load_state_dict(load_file(str(exported)), strict=True)
        np.testing.assert_allclose(_timm_logits(again, images), ref, rtol=0, atol=1e-6)


def test_cli_bad_input_exits_2_without_traceback(timm_models, tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    result = _cli(text, tmp_path / "out")
    assert result.returncode == 2
    assert "notes.pth is not a PyTorch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr

    source = tmp_path / "pico.pth"
    torch.save(timm_models("pico_32").state_dict(), source)
    result = _cli(source, tmp_path / "out", "--img-size", "48")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not divisible by window_size 4" in result.stderr
    result = _cli(source, tmp_path / "out", "--num-classes", "3")
    assert result.returncode == 2 and "--reinit-head" in result.stderr
