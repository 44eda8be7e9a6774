"""export.py / swin_flax.deploy.export: every format written, run in its runtime and compared with
the Flax model; fp16 within its tolerance; bad input as one error line; a timm Swin
converted by convert_timm_weights.py and exported to ONNX gives timm's own logits."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax import cli
from swin_flax.errors import UserInputError
from swin_flax.weights.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()
NEEDS = {
    "onnx": ("torch", "timm", "onnx", "onnxruntime", "onnxscript"),
    "litert": ("tensorflow", "ai_edge_litert"),
    "stablehlo": (),
}


# The formats' pytest marks: ONNX goes through timm and torch, LiteRT through TensorFlow.
MARKS = {
    "onnx": [pytest.mark.export, pytest.mark.torch],
    "litert": [pytest.mark.export],
    "stablehlo": [],
}


def formats(*params):
    """A pytest.param of each `fmt` or `(fmt, ...)`, marked with what that format needs."""
    cases = [p if isinstance(p, tuple) else (p,) for p in params]
    return [pytest.param(*case, marks=MARKS[case[0]]) for case in cases]


def needs(fmt):
    for module in NEEDS[fmt]:
        pytest.importorskip(
            module, reason=f"{fmt} export needs {module} (pip install -e .[export])"
        )


def perturbed(model, seed):
    """Random weights with O(1) logits, so parity tests compare something."""
    params = swin_flax.init_params(model, seed)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [p + 0.2 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def flax_logits(model, params, images):
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(lambda x: model.apply({"params": params}, x))(images))


def images_for(model, count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, model.img_size, model.img_size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def pico(tmp_path_factory):
    model = swin_flax.create_model("swin_pico", num_classes=10)
    path = tmp_path_factory.mktemp("pico") / "ckpt"
    save_checkpoint(path, model, perturbed(model, 1), class_names=NAMES)
    return path


@pytest.fixture(scope="module")
def window7(tmp_path_factory):
    # 56 px, patch 4: 14x14 tokens in windows of 7x7 = 49 tokens with the shifted-window
    # mask, then 7x7: one window, no shift.
    model = swin_flax.create_model(
        "swin_t",
        img_size=56,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        window_size=7,
        num_classes=6,
        drop_path_rate=0.0,
    )
    path = tmp_path_factory.mktemp("w7") / "ckpt"
    save_checkpoint(path, model, perturbed(model, 2))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", formats("onnx", "litert", "stablehlo"))
def test_fixed_batch_export_matches_flax_and_stores_metadata(fmt, pico, tmp_path):
    needs(fmt)
    from swin_flax.deploy.export import export_checkpoint
    from swin_flax.deploy.runners import load_model

    out = tmp_path / f"pico.{fmt}"
    report = export_checkpoint(pico, out, fmt, batch=2)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left beside it
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    runner = load_model(out)
    assert runner.class_names == NAMES and runner.batch_size == 2
    assert runner.metadata["input_layout"] == ("NCHW" if fmt == "onnx" else "NHWC")
    model, params = swin_flax.load_checkpoint(pico)
    images = images_for(model, 3)  # odd count: the runner pads the fixed batch
    np.testing.assert_allclose(runner(images), flax_logits(model, params, images), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,batch", formats(("onnx", None), ("litert", 2), ("stablehlo", None)))
def test_window7_export_matches_flax(fmt, batch, window7, tmp_path):
    needs(fmt)
    from swin_flax.deploy.export import export_checkpoint
    from swin_flax.deploy.runners import load_model

    out = tmp_path / f"w7.{fmt}"
    report = export_checkpoint(window7, out, fmt, batch=batch)
    assert report.batch_size == batch and report.max_abs_diff <= 1e-4
    runner = load_model(out)
    assert runner.batch_size == batch and runner.class_names is None
    model, params = swin_flax.load_checkpoint(window7)
    for count in (1, 3):
        images = images_for(model, count, seed=count)
        got = runner(images)
        assert got.shape == (count, 6)
        np.testing.assert_allclose(got, flax_logits(model, params, images), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", formats("onnx", "litert", "stablehlo"))
def test_fp16_export_within_tolerance_and_same_top1(fmt, pico, tmp_path):
    needs(fmt)
    from swin_flax.deploy.export import FP16_RELATIVE_TOLERANCE, export_checkpoint

    out = tmp_path / f"pico16.{fmt}"
    report = export_checkpoint(pico, out, fmt, precision="fp16")
    assert report.precision == "fp16" and report.top1_agreement == 1.0
    assert 0 < report.max_abs_diff <= report.tolerance
    assert report.tolerance >= FP16_RELATIVE_TOLERANCE
    fp32_size = sum(
        p.size * 4 for p in jax.tree_util.tree_leaves(swin_flax.load_checkpoint(pico)[1])
    )
    assert out.stat().st_size < 0.75 * fp32_size  # the weights are stored in float16


@pytest.mark.slow
def test_failed_check_keeps_the_file_aside_and_errors(pico, tmp_path, monkeypatch):
    from swin_flax.deploy import export

    monkeypatch.setattr(export, "FP32_TOLERANCE", 0.0)
    out = tmp_path / "m.stablehlo"
    with pytest.raises(UserInputError, match="does not match the Flax model"):
        export.export_checkpoint(pico, out, "stablehlo")
    assert not out.exists() and (tmp_path / "m.stablehlo.failed-check").is_file()


def test_check_images_fall_back_to_given_files_then_synthetic(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from swin_flax.deploy import export

    monkeypatch.setenv(export.CHECK_ARCHIVE_ENV, str(tmp_path / "absent.tar.gz"))
    images, source = export.load_check_images(32)
    assert source == "synthetic images" and images.shape == (8, 32, 32, 3)
    assert "synthetic" in capsys.readouterr().err
    np.testing.assert_array_equal(images, export.load_check_images(32)[0])  # deterministic
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "a.png")
    images, source = export.load_check_images(32, [tmp_path / "a.png"])
    assert images.shape == (1, 32, 32, 3) and "given" in source


def test_cifar_check_images_when_the_archive_is_there():
    from swin_flax.deploy import export

    if export.check_archive() is None:
        pytest.skip("no CIFAR-10 archive at ../shared/data/")
    images = export.cifar_test_images(export.check_archive())
    assert len(images) == 10 and images[0].shape == (32, 32, 3)


def run_cli(argv, capsys):
    spec = importlib.util.spec_from_file_location("export_cli", ROOT / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = cli.run(module.main, argv)
    return code, capsys.readouterr()


@pytest.mark.slow  # with the pico fixture (a perturbed checkpoint) about 5 s
def test_cli_bad_input_is_one_error_line(pico, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    code, out = run_cli([str(tmp_path), str(tmp_path / "m.onnx"), "--format", "onnx"], capsys)
    assert code == 2 and out.err.count("\n") == 1
    assert out.err.startswith("error:") and "not a swin_flax checkpoint" in out.err
    code, out = run_cli([str(pico), str(tmp_path), "--format", "stablehlo"], capsys)
    assert code == 2 and "is a directory" in out.err
    with pytest.raises(SystemExit) as stop:  # argparse: usage + one error line, exit 2
        run_cli([str(pico), str(tmp_path / "m"), "--format", "tensorrt"], capsys)
    assert stop.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_litert_dynamic_batch_is_refused_up_front(window7, tmp_path):
    from swin_flax.deploy.export import export_checkpoint

    with pytest.raises(UserInputError, match="fixed batch size"):
        export_checkpoint(window7, tmp_path / "m.tflite", "litert", batch=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_stablehlo_prints_parity(pico, tmp_path, capsys):
    code, out = run_cli(
        [str(pico), str(tmp_path / "m.zip"), "--format", "stablehlo", "--dynamic-batch"], capsys
    )
    assert code == 0 and "max |logit difference|" in out.out and "batch dynamic" in out.out


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.export
@pytest.mark.torch
def test_timm_swin_converted_and_exported_to_onnx_gives_timm_logits(tmp_path):
    needs("onnx")
    import onnxruntime as ort
    import timm
    import torch
    from safetensors.torch import save_file

    from swin_flax.deploy.export import export_checkpoint

    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=7,
        img_size=56,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_file(
        {
            k: v.contiguous()
            for k, v in model.state_dict().items()
            if "relative_position_index" not in k and "attn_mask" not in k
        },
        str(tmp_path / "model.safetensors"),
    )
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "convert_timm_weights.py"),
            str(tmp_path / "model.safetensors"),
            str(tmp_path / "ckpt"),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    export_checkpoint(tmp_path / "ckpt", tmp_path / "m.onnx", "onnx", batch=None)

    images = np.random.default_rng(0).normal(size=(3, 3, 56, 56)).astype(np.float32)  # NCHW
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert np.abs(got - expected).max() <= 1e-4
