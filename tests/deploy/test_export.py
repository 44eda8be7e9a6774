"""export.py / swin_flax.deploy.export: every format written, run in its runtime and compared with
the Flax model; fp16 within its tolerance; bad input as one error line; a timm Swin
converted by convert_timm_weights.py and exported to ONNX gives timm's own logits."""

import importlib.util
import re
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
    from swin_flax.deploy.formats import keep_triton_out_after_tensorflow

    for module in NEEDS[fmt]:
        pytest.importorskip(
            module, reason=f"{fmt} export needs {module} (pip install -e .[export])"
        )
    keep_triton_out_after_tensorflow()  # torch after TensorFlow: see formats.py


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


@pytest.mark.parametrize("given", ["the stage", "its checkpoints", "its final_model"])
def test_cli_exporting_an_unfinished_stage_says_to_finish_it(given, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    stage = tmp_path / "runs" / "student_transfer_kd"
    (stage / "checkpoints" / "300").mkdir(parents=True)
    (stage / "stage_config.json").write_text("{}")
    path = {
        "the stage": stage,
        "its checkpoints": stage / "checkpoints",
        "its final_model": stage / "final_model",
    }[given]
    code, out = run_cli([str(path), str(tmp_path / "m.onnx"), "--format", "onnx"], capsys)
    assert code == 2 and out.err.count("\n") == 1, out.err
    assert out.err.startswith(f"error: the training stage {stage} has not finished")
    assert "Rerun train.py with the same --config and --workdir to finish it" in out.err


def test_litert_dynamic_batch_is_refused_up_front(window7, tmp_path):
    from swin_flax.deploy.export import export_checkpoint

    with pytest.raises(UserInputError, match="fixed batch size"):
        export_checkpoint(window7, tmp_path / "m.tflite", "litert", batch=None)
    assert list(tmp_path.iterdir()) == []


def test_int8_without_calibration_and_int8_stablehlo_are_refused_up_front(tmp_path):
    from swin_flax.deploy.export import export_checkpoint

    absent = tmp_path / "no-checkpoint"  # never read: the refusal comes first
    with pytest.raises(UserInputError, match=r"int8 needs representative .*--calibration DIR"):
        export_checkpoint(absent, tmp_path / "m.onnx", "onnx", precision="int8")
    with pytest.raises(
        UserInputError,
        match="stablehlo exports fp32 or fp16 only; int8-weights is exported to onnx and litert",
    ):
        export_checkpoint(absent, tmp_path / "m.zip", "stablehlo", precision="int8-weights")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing calibration", r"--calibration \S+/nope: no such folder"),
        ("empty calibration", r"--calibration \S+/empty holds no images"),
        ("missing evaluate", r"--evaluate \S+/nope: no such folder"),
        ("foreign classes", r"has classes \['x'\] that the checkpoint does not know"),
        ("corrupt calibration image", r"1 of 1 images cannot be read:"),
    ],
)
def test_cli_bad_calibration_or_evaluate_folder_is_one_error_line(
    case, message, pico, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "foreign" / "x").mkdir(parents=True)
    (tmp_path / "corrupt" / "cat").mkdir(parents=True)
    (tmp_path / "corrupt" / "cat" / "a.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    option = {
        "missing calibration": ["--calibration", tmp_path / "nope"],
        "empty calibration": ["--calibration", tmp_path / "empty"],
        "missing evaluate": ["--evaluate", tmp_path / "nope"],
        "foreign classes": ["--evaluate", tmp_path / "foreign"],
        "corrupt calibration image": ["--calibration", tmp_path / "corrupt"],
    }[case]
    out = tmp_path / "m.onnx"
    argv = [pico, out, "--format", "onnx", "--precision", "int8", *option]
    if "evaluate" in option[0]:
        argv += ["--calibration", tmp_path / "corrupt"]  # never reached: --evaluate is read first
    code, output = run_cli([str(a) for a in argv], capsys)
    assert code == 2 and output.err.startswith("error:"), output.err
    assert re.search(message, output.err), output.err
    if case != "corrupt calibration image":  # that one lists the file on a second line
        assert output.err.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.export
def test_a_converter_failure_is_one_error_line_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    needs("litert")
    from swin_flax.deploy import litert_rewrites

    # A 1x1 last stage at batch 1 (8 px, 2-px patches, 3 stages: 4x4, 2x2, 1x1) converts only
    # with the export's Dense rewrite; without it the TFLite converter fails.
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(
        img_size=8, patch_size=2, embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 2),
        window_size=2, num_classes=3,
    ))  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", model, swin_flax.init_params(model, 0))
    monkeypatch.setattr(
        litert_rewrites, "flatten_unit_dense_inputs", lambda next_fun, args, kwargs, _: next_fun(*args, **kwargs)
    )  # fmt: skip
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    out = tmp_path / "m.tflite"
    code, output = run_cli([str(tmp_path / "ckpt"), str(out), "--format", "litert"], capsys)
    assert code == 2, output.err
    # the synthetic check-image note, then the one error line
    assert output.err.splitlines()[1:] == [next(iter(re.findall("error: .*", output.err)))]
    assert "error: the TFLite converter failed on this model: " in output.err
    assert "'tfl.batch_matmul' op found invalid output rank" in output.err
    assert "Traceback" not in output.err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.fixture(scope="module")
def small_swin(tmp_path_factory):
    """A small Swin (32 px, 4-px patches, two stages, shifted windows) and generated class
    folders: calibration images and evaluation images."""
    from PIL import Image

    from swin_flax.deploy.inputs import synthetic_images

    root = tmp_path_factory.mktemp("int8")
    model = swin_flax.create_model(
        "swin_micro", depths=(2, 2), num_heads=(1, 2), embed_dim=16, num_classes=10
    )
    save_checkpoint(root / "ckpt", model, perturbed(model, 3), class_names=NAMES)
    for i, image in enumerate(synthetic_images(32, 60)):
        folder = root / ("calibration" if i < 30 else "evaluate") / NAMES[i % 10]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("fmt", formats("onnx", "litert"))
def test_int8_export_runs_in_its_runtime_and_agrees_with_flax_top1(fmt, small_swin, tmp_path):
    needs(fmt)
    from swin_flax.deploy import image_sets
    from swin_flax.deploy.export import export_checkpoint
    from swin_flax.deploy.runners import load_model

    def export(path):
        return export_checkpoint(
            small_swin / "ckpt",
            path,
            fmt,
            precision="int8",
            calibration=small_swin / "calibration",
            calibration_count=20,
            calibration_seed=1,
            evaluate=small_swin / "evaluate",
        )

    out = tmp_path / f"m.{fmt}"
    report = export(out)
    assert report.precision == "int8" and report.relative_rms <= 0.2
    assert report.calibration_source.startswith("20 images from")
    kinds = report.info["op_kinds"]
    assert kinds["int8"]  # integer kernels do the work
    if fmt == "onnx":  # onnxruntime has no integer LayerNorm or GELU: reported as float
        assert {"LayerNormalization", "Gelu"} <= set(kinds["float"])
    assert "ops: int8:" in report.summary()
    # The file's top-1 is Flax's on every generated image with a clear Flax winner.
    model, params = swin_flax.load_checkpoint(small_swin / "ckpt")
    eval_set = image_sets.evaluation_set(small_swin / "evaluate", NAMES, 10)
    images = np.concatenate([x for x, _ in eval_set.batches(32)])
    reference = flax_logits(model, params, images)
    got = load_model(out)(images)
    rms = float(np.sqrt(np.mean((got - reference) ** 2)))
    top2 = np.sort(reference, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 4 * rms
    assert clear.sum() >= len(images) // 2
    np.testing.assert_array_equal(got.argmax(1)[clear], reference.argmax(1)[clear])
    assert report.evaluation.images == 30 and report.evaluation.agreement >= 90.0
    # Calibration is deterministic for a seed: the same images, the same file.
    again = tmp_path / f"again.{fmt}"
    export(again)
    assert again.read_bytes() == out.read_bytes()


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


def test_an_interpreter_that_aborts_is_one_error_and_the_file_is_kept_aside(tmp_path, monkeypatch):
    from swin_flax.deploy import export
    from swin_flax.deploy.formats import ExportFailedError

    # What the LiteRT interpreter does with out-of-range int8 scales: abort the process.
    monkeypatch.setattr(export, "_PREPARE_LITERT", "import os\nos.abort()\n")
    written = tmp_path / ".m.tmp.tflite"
    written.write_bytes(b"model")
    with pytest.raises(ExportFailedError, match=r"cannot prepare the quantized model \(signal 6"):
        export._check_litert_prepares(written, tmp_path / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite.failed-check"]
