"""timm <-> swin_flax conversion (`swin_flax.weights.timm`): parity of logits and of every
stage, export back to timm, the classifier head, windows resized, the problems of a
checkpoint that does not fit reported together, and the convert_timm_weights.py CLI.

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
import numpy as np
import pytest

import swin_flax
from swin_flax.weights import importer, layouts
from swin_flax.weights import timm as C
from tests.helpers import pico_state
from tests.weights import parity_report as parity

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
timm_swin = pytest.importorskip("timm.models.swin_transformer")

REPO = Path(__file__).resolve().parents[2]
LOGIT_TOL = 1e-4  # measured ~1e-6 (see parity_report.py)
FEATURE_TOL = 1e-4  # absolute, features up to ~10 in size; measured <= 1.5e-5


def _timm_logits(model, images_nhwc):
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def _flax_logits(model, params, images_nhwc):
    return parity.flax_forward(model, params, images_nhwc)[0]  # one compile per architecture


# --------------------------------------------------------------------------------------
# Parity with timm.


# Only pico_32 checks parity in seconds; the ImageNet-sized ones take 2-5 s each.
@pytest.mark.parametrize(
    "name",
    [
        name if name == "pico_32" else pytest.param(name, marks=pytest.mark.slow)
        for name in list(parity.CONFIGS) + [parity.MICROSOFT]
    ],
)
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


def test_parameter_tree_equals_timm_param_count(timm_models):
    model = swin_flax.SwinTransformer(
        swin_flax.SwinConfig(**layouts.infer_architecture(pico_state(timm_models)))
    )
    params = C.timm_to_flax(pico_state(timm_models), model)
    timm_count = sum(p.numel() for p in timm_models("pico_32").parameters())
    assert swin_flax.count_params(params) == timm_count


# --------------------------------------------------------------------------------------
# Export to timm.


def test_export_loads_in_timm_strict_and_gives_the_same_logits(timm_models, tmp_path):
    state = pico_state(timm_models)
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**layouts.infer_architecture(state)))
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
# A checkpoint of another window (bias tables resized).


@pytest.mark.slow
def test_window7_checkpoint_into_window12_model_matches_timm():
    small = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), num_classes=10)
    source = parity.make_timm_model(dict(small, img_size=224, window_size=7), seed=5)
    state = parity.timm_state_dict(source)
    target = timm_swin.SwinTransformer(**small, img_size=384, window_size=12).eval()
    target.load_state_dict(
        timm_swin.checkpoint_filter_fn({k: torch.from_numpy(v) for k, v in state.items()}, target),
        strict=True,
    )

    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**small, img_size=384, window_size=12))
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
    state = pico_state(timm_models)
    arch = layouts.infer_architecture(state)
    kept = C.timm_to_flax(state, swin_flax.SwinTransformer(swin_flax.SwinConfig(**arch)))
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**dict(arch, num_classes=5)))
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
    same_classes = C.timm_to_flax(
        state, swin_flax.SwinTransformer(swin_flax.SwinConfig(**arch)), head="reinit"
    )
    assert not np.allclose(same_classes["head"]["kernel"], kept["head"]["kernel"])
    np.testing.assert_array_equal(params["norm"]["scale"], kept["norm"]["scale"])
    np.testing.assert_array_equal(
        params["layers_3"]["blocks_1"]["mlp"]["fc2"]["kernel"],
        kept["layers_3"]["blocks_1"]["mlp"]["fc2"]["kernel"],
    )


def test_head_drop_gives_timm_pooled_features(timm_models):
    state = pico_state(timm_models)
    model = swin_flax.SwinTransformer(
        swin_flax.SwinConfig(**dict(layouts.infer_architecture(state), num_classes=0))
    )
    params = C.timm_to_flax(state, model, head="drop")
    assert "head" not in params
    images = parity.random_images(parity.CONFIGS["pico_32"])
    timm_model = timm_models("pico_32")
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        ref = timm_model.forward_head(timm_model.forward_features(x), pre_logits=True).numpy()
    assert np.abs(_flax_logits(model, params, images) - ref).max() <= LOGIT_TOL


def test_head_options_are_explicit(timm_models, tmp_path):
    state = pico_state(timm_models)
    arch = layouts.infer_architecture(state)
    with pytest.raises(
        C.ConversionError,
        match=r"(?s)head\.fc\.weight: checkpoint \(10, 256\), "
        r"model expects \(5, 256\).*head='reinit'",
    ):
        C.timm_to_flax(
            state, swin_flax.SwinTransformer(swin_flax.SwinConfig(**dict(arch, num_classes=5)))
        )
    with pytest.raises(C.ConversionError, match=r"(?s)unexpected.*head\.fc\.weight.*head='drop'"):
        C.timm_to_flax(
            state, swin_flax.SwinTransformer(swin_flax.SwinConfig(**dict(arch, num_classes=0)))
        )
    with pytest.raises(C.ConversionError, match="head='drop' builds a headless model"):
        C.timm_to_flax(state, swin_flax.SwinTransformer(swin_flax.SwinConfig(**arch)), head="drop")
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
# A checkpoint that does not fit the model.


def test_missing_unexpected_and_misshapen_keys_in_one_error(timm_models):
    state = pico_state(timm_models)
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**layouts.infer_architecture(state)))
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


@pytest.mark.slow
@pytest.mark.multiprocess
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
