"""Where weights come from (`swin_flax.weights.sources`): .safetensors without torch,
PyTorch files and the wrappers training scripts put around them, the Hub by timm name, and
a clear error for everything that is not a state_dict."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import swin_flax
from swin_flax.weights import importer, layouts, sources
from swin_flax.weights import timm as C
from tests.helpers import REPO, pico_state

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")


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
    save_file(pico_state(timm_models), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        C.ConversionError,
        match=r"model\.safetensors is not a readable "
        r"\.safetensors file .*truncated",
    ):
        sources.load_state_dict(path)


@pytest.mark.multiprocess
def test_safetensors_and_timm_names_are_read_without_torch(timm_models, tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file(pico_state(timm_models), str(path))
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
    assert int(result.stdout) == len(pico_state(timm_models))


def test_bfloat16_checkpoints_load_as_float32(timm_models, tmp_path):
    import ml_dtypes
    from safetensors.numpy import save_file

    state = pico_state(timm_models)
    half = {k: v.astype(ml_dtypes.bfloat16) for k, v in state.items() if v.dtype == np.float32}
    save_file(half, str(tmp_path / "bf16.safetensors"))
    torch.save(
        {k: torch.from_numpy(v).bfloat16() for k, v in state.items() if v.dtype == np.float32},
        tmp_path / "bf16.pth",
    )
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**layouts.infer_architecture(state)))
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
        match=r"pico\.pth needs the Python package 'torch', which is not installed: "
        r'pip install -e "\.\[convert\]", or convert it to \.safetensors elsewhere$',
    ):
        sources.load_state_dict(path)


def test_torch_checkpoint_with_non_tensor_objects(tmp_path):
    path = tmp_path / "train_state.pth"
    import argparse

    torch.save({"model": {"w": torch.zeros(2)}, "config": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(C.ConversionError) as caught:
        sources.load_state_dict(path)
    message = str(caught.value)
    assert message.startswith(f"{path} holds Python objects other than tensors")
    assert "torch.save(model.state_dict(), path)" in message
    # torch's hint whole, on one line: both options and the trusted-source caveat, no escapes
    assert "\n" not in message and "\x1b" not in message
    assert "do those steps only if you trust the source of the checkpoint" in message
    assert "(1)" in message and "(2)" in message
    assert "Do it only if you got the file from a trusted source" in message
    assert "Unsupported global: GLOBAL argparse.Namespace" in message


def test_training_checkpoints_are_unwrapped_as_timm_does(timm_models, tmp_path):
    state = pico_state(timm_models)
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
    save_file(pico_state(timm_models), str(path))
    calls = []
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_download", lambda **kw: calls.append(kw) or str(path)
    )
    state = sources.load_state_dict("swin_pico_test.in1k")
    assert calls == [dict(repo_id="timm/swin_pico_test.in1k", filename="model.safetensors")]
    assert state.keys() == pico_state(timm_models).keys()
