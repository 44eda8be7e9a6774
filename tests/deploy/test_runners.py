"""Running exported models (`swin_flax.deploy.runners`): the format told from the content,
metadata in and out, fixed-batch padding, top-k, preprocessing as in evaluation, and a
missing export library named with the extra that installs it."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax.deploy import formats, runners
from swin_flax.errors import CheckpointError, UserInputError
from swin_flax.weights import checkpoint
from tests.helpers import tiny_model


def test_a_missing_export_library_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x04")
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(
        UserInputError,
        match=r"^reading an ONNX model needs the Python package 'onnx', which is not "
        r'installed: pip install -e "\.\[export\]"$',
    ):
        runners.load_model(tmp_path / "m.onnx")


def test_the_format_is_told_from_the_content_not_the_name(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "model.bin").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(8))
    (tmp_path / "model.tflite").write_bytes(b"PK\x03\x04" + bytes(8))
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x04")
    (tmp_path / "notes.txt").write_text("hello there")
    assert runners.detect_format(tmp_path / "ckpt") == "checkpoint"
    assert runners.detect_format(tmp_path / "model.bin") == "litert"
    assert runners.detect_format(tmp_path / "model.tflite") == "stablehlo"
    assert runners.detect_format(tmp_path / "m.onnx") == "onnx"
    with pytest.raises(UserInputError, match="neither a checkpoint directory nor an exported"):
        runners.detect_format(tmp_path / "notes.txt")
    with pytest.raises(CheckpointError, match="no such model file"):
        runners.load_model(tmp_path / "absent.onnx")


def test_metadata_round_trips_as_json_strings_and_must_name_the_input():
    metadata = {"img_size": 32, "input_layout": "NHWC", "class_names": ["cat", "dog"]}
    encoded = formats.encode_metadata(metadata)
    assert encoded["class_names"] == '["cat", "dog"]'
    assert runners.decode_metadata(encoded, Path("m")) == metadata
    with pytest.raises(UserInputError, match=r"m lacks the swin_flax metadata \['input_layout'\]"):
        runners.decode_metadata({"img_size": "32"}, Path("m"))
    with pytest.raises(UserInputError, match="unreadable swin_flax metadata"):
        runners.decode_metadata({"img_size": "{"}, Path("m"))


def test_a_fixed_batch_runner_pads_the_last_chunk_and_drops_its_logits():
    seen = []

    def predict_batch(images):
        seen.append(len(images))
        return images[:, 0, 0, :2] * 10

    runner = runners.Runner(predict_batch, {"img_size": 1, "input_layout": "NHWC"}, 2)
    images = np.arange(5 * 3, dtype=np.float32).reshape(5, 1, 1, 3)
    np.testing.assert_array_equal(runner(images), images[:, 0, 0, :2] * 10)
    assert seen == [2, 2, 2] and runner.img_size == 1 and runner.class_names is None


def test_top_k_gives_the_most_probable_classes_with_softmax_probabilities():
    logits = np.array([[0.0, np.log(3.0), 0.0, -50.0]])
    [best] = runners.top_k(logits, k=2)
    assert best[0] == (1, pytest.approx(0.6)) and best[1][1] == pytest.approx(0.2)
    assert best[1][0] in (0, 2)


def test_a_checkpoint_runs_with_its_class_names(tmp_path):
    model = tiny_model(num_classes=2)
    params = swin_flax.init_params(model, 0)
    checkpoint.save_checkpoint(tmp_path / "ckpt", model, params, class_names=["cat", "dog"])
    runner = runners.load_model(tmp_path / "ckpt")
    assert runner.class_names == ["cat", "dog"] and runner.batch_size is None
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    expected = jax.jit(lambda x: model.apply({"params": params}, x))(images)
    np.testing.assert_allclose(runner(images), expected, atol=1e-5)


def test_weights_renamed_as_an_export_are_named_by_their_content_and_suffix(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"stem.0.weight": torch.zeros(4, 3, 4, 4)}, tmp_path / "convnext.onnx")  # a .pth
    with pytest.raises(UserInputError) as caught:
        runners.detect_format(tmp_path / "convnext.onnx")
    message = str(caught.value)
    assert message.startswith(
        f"{tmp_path / 'convnext.onnx'} is named like an ONNX export but holds a PyTorch "
        "checkpoint (a torch.save zip archive), not a model written by export.py"
    )
    assert "convert_timm_weights.py" in message and "StableHLO" not in message
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "weights.zip"))
    with pytest.raises(UserInputError, match=r"named like a StableHLO export but holds a \.safe"):
        runners.detect_format(tmp_path / "weights.zip")


def test_a_file_named_onnx_that_is_no_protobuf_says_so(tmp_path):
    (tmp_path / "notes.onnx").write_text("hello there")
    with pytest.raises(UserInputError, match=r"notes.onnx is named like an ONNX export but does"):
        runners.detect_format(tmp_path / "notes.onnx")
