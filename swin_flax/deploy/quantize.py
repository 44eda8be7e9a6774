"""Post-training int8 with the converters' and onnxruntime's own quantization APIs, and
what a quantized file computes in int8 and what it leaves in float.

  int8          LiteRT: full-integer post-training quantization (TFLiteConverter with a
                representative data set: int8 activations, per-channel int8 weights); an op
                without an int8 kernel stays float and is listed. Input and logits stay
                float32 (one QUANTIZE after the input, one DEQUANTIZE before the logits), so
                the file is run like the float ones.
                ONNX: onnxruntime's `quant_pre_process` (shape inference, MatMul + Add fused
                into Gemm), then `quantize_static` (QDQ, per-channel int8 weights, uint8
                activations, MinMax calibration).
  int8-weights  dynamic range: int8 weights; activations are quantized on the fly where a
                kernel takes them (fully connected layers), float elsewhere. LiteRT: the
                converter's default optimization without data; ONNX: `quant_pre_process`
                then `quantize_dynamic` (per-channel int8 weights).

The calibration images are the caller's (`swin_flax.deploy.image_sets.calibration_images`):
preprocessed NHWC float32, fed in batches of the exported batch size.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from swin_flax._optional import require

QUANTIZED_PRECISIONS = ("int8-weights", "int8")

# Ops that only move or reshape data: counted neither as int8 nor as float compute.
_DATA_MOVEMENT = {
    # LiteRT builtins
    "RESHAPE", "TRANSPOSE", "GATHER", "GATHER_ND", "CONCATENATION", "STRIDED_SLICE", "SLICE",
    "PACK", "UNPACK", "SQUEEZE", "EXPAND_DIMS", "PAD", "SPLIT", "SPLIT_V", "SHAPE",
    "BROADCAST_TO", "TILE",
    # ONNX operators
    "Reshape", "Transpose", "Gather", "GatherND", "Concat", "Slice", "Squeeze", "Unsqueeze",
    "Pad", "Split", "Shape", "Constant", "Identity", "Flatten", "Expand", "Tile", "Cast",
    "ConstantOfShape", "Range",
}  # fmt: skip
_LITERT_CONVERSIONS = {"QUANTIZE", "DEQUANTIZE"}
_ONNX_CONVERSIONS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def _batches(images: np.ndarray, batch: int):
    """`images` in chunks of `batch`; a short last chunk is left out (a fixed-batch model
    takes only full ones)."""
    for start in range(0, len(images) - batch + 1, batch):
        yield images[start : start + batch]


# --------------------------------------------------------------------------------------
# LiteRT (TFLiteConverter).


def configure_litert_converter(converter, precision: str, calibration, batch: int) -> None:
    """Set `converter` (a tf.lite.TFLiteConverter) up for `precision`."""
    tf = require("tensorflow", "the LiteRT export", "export")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        images = np.asarray(calibration, np.float32)
        # TFLITE_BUILTINS (not _INT8): an op without an int8 kernel stays float instead of
        # failing the conversion; litert_op_kinds lists it.
        converter.representative_dataset = lambda: ([chunk] for chunk in _batches(images, batch))
    # int8-weights: Optimize.DEFAULT without data is dynamic range quantization.


def litert_op_kinds(content: bytes) -> dict[str, dict[str, int]]:
    """{'int8': {op: count}, 'float': {op: count}} of a .tflite flatbuffer: an op is int8
    when one of its tensors is int8 (activations, or weights of a hybrid kernel), float
    when all its tensors are float. QUANTIZE / DEQUANTIZE and data movement are left out."""
    schema = require("ai_edge_litert.schema_py_generated", "reading a LiteRT model", "export")
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    kinds = {"int8": collections.Counter(), "float": collections.Counter()}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            if name in _LITERT_CONVERSIONS or name in _DATA_MOVEMENT:
                continue
            tensors = [op.InputsAsNumpy(), op.OutputsAsNumpy()]
            dtypes = {types[graph.Tensors(int(t)).Type()] for ts in tensors for t in ts if t >= 0}
            if dtypes & {"INT8", "UINT8", "INT16"}:
                kinds["int8"][name] += 1
            elif dtypes & {"FLOAT32", "FLOAT16"}:
                kinds["float"][name] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in kinds.items()}


# --------------------------------------------------------------------------------------
# ONNX (onnxruntime.quantization).


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over NCHW batches."""

    def __init__(self, images_nchw: np.ndarray, input_name: str, batch: int):
        self._chunks = iter(list(_batches(images_nchw, batch)))
        self._name = input_name

    def get_next(self):
        chunk = next(self._chunks, None)
        return None if chunk is None else {self._name: np.ascontiguousarray(chunk)}


def quantize_onnx(
    float_model: Path, out: Path, precision: str, calibration, *, input_name: str, batch: int
) -> None:
    """Write `out`: the float32 ONNX file `float_model` quantized to `precision`, int8
    calibrated on `calibration` (in the model's input layout, NCHW for our exports)."""
    quantization = require("onnxruntime.quantization", "the int8 ONNX export", "export")
    shape_inference = require(
        "onnxruntime.quantization.shape_inference", "the int8 ONNX export", "export"
    )
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        shape_inference.quant_pre_process(str(float_model), str(prepared))
        if precision == "int8-weights":
            quantization.quantize_dynamic(
                str(prepared), str(out), weight_type=quantization.QuantType.QInt8, per_channel=True
            )
            return
        images = np.asarray(calibration, np.float32)
        with _quiet_root_logger():
            quantization.quantize_static(
                str(prepared),
                str(out),
                _CalibrationReader(images, input_name, batch),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                weight_type=quantization.QuantType.QInt8,
                activation_type=quantization.QuantType.QUInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
            )


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantizer logs a root-logger warning for every 1-D weight (LayerNorm
    scales multiplied in by fused ops) it cannot quantize per channel, and quantizes it per
    tensor instead, as intended: dozens of lines the user cannot act on."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _is_int8_onnx_op(op_type: str) -> bool:
    """onnxruntime's integer kernels: QLinearMatMul, QGemm, MatMulInteger, DynamicQuantize-
    MatMul, ConvInteger, QAttention, ..."""
    return (
        op_type.startswith("QLinear")
        or (len(op_type) > 1 and op_type[0] == "Q" and op_type[1].isupper())
        or "Integer" in op_type
        or op_type == "DynamicQuantizeMatMul"
    )


def onnx_op_kinds(path: Path) -> dict[str, dict[str, int]]:
    """{'int8': {op: count}, 'float': {op: count}} of the graph onnxruntime runs for
    `path` on the CPU (after its fusions: DequantizeLinear -> MatMul -> QuantizeLinear
    becomes QLinearMatMul; an op with no integer kernel runs in float between them)."""
    onnx = require("onnx", "reading an ONNX model", "export")
    ort = require("onnxruntime", "running an ONNX model", "export")
    kinds = {"int8": collections.Counter(), "float": collections.Counter()}
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    for node in graph.node:
        if node.op_type in _ONNX_CONVERSIONS or node.op_type in _DATA_MOVEMENT:
            continue
        kinds["int8" if _is_int8_onnx_op(node.op_type) else "float"][node.op_type] += 1
    return {kind: dict(sorted(counts.items())) for kind, counts in kinds.items()}


def describe_op_kinds(kinds: dict[str, dict[str, int]]) -> str:
    """'int8: 40 ops (FULLY_CONNECTED x24, ...); left float: 9 (LAYER_NORM x9)'."""

    def listing(counts: dict[str, int]) -> str:
        return ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda x: -x[1]))

    int8, left = kinds.get("int8", {}), kinds.get("float", {})
    text = f"int8: {sum(int8.values())} ops ({listing(int8) or 'none'})"
    return text + (f"; left float: {sum(left.values())} ({listing(left)})" if left else "")
