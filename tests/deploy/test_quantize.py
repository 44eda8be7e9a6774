"""Post-training int8 (`swin_flax.deploy.quantize`): the converters' quantization set up for
each precision, and an op with no int8 kernel reported as left float (LiteRT and ONNX)."""

import numpy as np
import pytest

from swin_flax.deploy import quantize


def tensorflow_or_skip():
    from swin_flax.deploy.formats import keep_triton_out_after_tensorflow

    tf = pytest.importorskip("tensorflow")
    keep_triton_out_after_tensorflow()  # a later torch import would crash: see formats.py
    return tf


def test_calibration_batches_are_full_batches_in_order():
    images = np.arange(7)[:, None].astype(np.float32)
    batches = list(quantize._batches(images, 3))
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5]]


def test_op_kinds_read_as_one_line():
    kinds = {"int8": {"FULLY_CONNECTED": 3, "GELU": 2}, "float": {"SIN": 1}}
    assert quantize.describe_op_kinds(kinds) == (
        "int8: 5 ops (FULLY_CONNECTED x3, GELU x2); left float: 1 (SIN x1)"
    )
    assert (
        quantize.describe_op_kinds({"int8": {"QGemm": 1}, "float": {}}) == "int8: 1 ops (QGemm x1)"
    )


@pytest.mark.parametrize(
    "op,integer",
    [
        ("QLinearMatMul", True),
        ("QGemm", True),
        ("MatMulInteger", True),
        ("DynamicQuantizeMatMul", True),
        ("QAttention", True),
        ("LayerNormalization", False),
        ("Gelu", False),
        ("Quantize", False),
    ],
)
def test_onnxruntime_integer_kernels_are_told_by_name(op, integer):
    assert quantize._is_int8_onnx_op(op) is integer


def _tiny_tf_function(tf):
    weights = tf.constant(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)], autograph=False)
    def forward(x):
        return tf.sin(tf.matmul(x, weights)) + 1.0  # SIN has no int8 kernel in TFLite

    return forward


@pytest.mark.export
@pytest.mark.parametrize(
    "precision,expected",
    [
        ("int8", {"int8": {"ADD": 1, "FULLY_CONNECTED": 1}, "float": {"SIN": 1}}),
        ("int8-weights", {"int8": {"FULLY_CONNECTED": 1}, "float": {"ADD": 1, "SIN": 1}}),
        ("fp32", {"int8": {}, "float": {"ADD": 1, "FULLY_CONNECTED": 1, "SIN": 1}}),
    ],
)
def test_a_litert_op_without_an_int8_kernel_stays_float_and_is_listed(precision, expected):
    tf = tensorflow_or_skip()
    pytest.importorskip("ai_edge_litert")
    forward = _tiny_tf_function(tf)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [forward.get_concrete_function()], forward
    )
    calibration = np.random.default_rng(1).normal(size=(16, 64)).astype(np.float32)
    quantize.configure_litert_converter(converter, precision, calibration, 1)
    assert quantize.litert_op_kinds(converter.convert()) == expected


def _tiny_onnx_model(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(32, 32)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["images", "w"], ["h"]),
            helper.make_node("Sin", ["h"], ["s"]),  # no integer kernel in onnxruntime
            helper.make_node("MatMul", ["s", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 32])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


@pytest.mark.slow
@pytest.mark.export
@pytest.mark.parametrize("precision", ["int8", "int8-weights"])
def test_an_onnx_op_without_an_integer_kernel_stays_float_and_is_listed(precision, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _tiny_onnx_model(tmp_path / "f.onnx")
    calibration = np.random.default_rng(1).normal(size=(8, 32)).astype(np.float32)
    out = tmp_path / "q.onnx"
    quantize.quantize_onnx(
        tmp_path / "f.onnx", out, precision, calibration, input_name="images", batch=1
    )
    kinds = quantize.onnx_op_kinds(out)
    assert kinds["float"] == {"Sin": 1}
    assert sum(kinds["int8"].values()) == 2  # both matrix products run on integer kernels
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = calibration[:1]
    reference = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    expected = reference.run(None, {"images": x})[0]
    got = session.run(None, {"images": x})[0]
    assert np.sqrt(np.mean((got - expected) ** 2)) < 0.1 * np.std(expected)
