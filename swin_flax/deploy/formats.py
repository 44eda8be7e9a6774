"""Writers of the three deployment formats; `swin_flax.deploy.export` picks one (from the
table `swin_flax.deploy.runners.FORMATS`) and checks it.

Each writer takes the Flax model and parameters, the fixed batch size (None: dynamic),
the precision ('fp32', 'fp16', and for ONNX and LiteRT 'int8-weights' and 'int8'), the
metadata to store and, for int8, the calibration images, and writes one file:

  onnx       our timm export (`save_timm_safetensors`) -> timm SwinTransformer ->
             `torch.onnx.export(dynamo=True)`; input NCHW float32 like timm. fp16: the
             float32 graph converted by onnxruntime's float16 tool with float32 inputs and
             outputs, LayerNorm/Softmax/GELU(Erf)/ReduceMean kept in float32. int8,
             int8-weights: the float32 graph quantized by onnxruntime (`quantize.py`).
  litert     `jax2tf.convert` of the Flax forward, traced with the rewrites of
             `litert_rewrites.py` -> `tf.lite.TFLiteConverter` (TFLite builtin ops only);
             input NHWC float32; fixed batch size only. fp16: float16 weights (the
             converter's float16 quantization), computed in float32 on CPU, in float16 on
             GPU delegates. int8, int8-weights: the converter's quantization (`quantize.py`).
  stablehlo  `jax.export` of the jitted Flax forward (weights as constants), serialized,
             in a zip with metadata.json; input NHWC float32. fp16: the model built with
             dtype=float16 and float16 parameters (logits float32).

A converter that fails raises `ExportFailedError`: one line with the converter's own
reason, never its traceback (SWIN_FLAX_DEBUG=1 shows it). Export libraries are imported
inside the functions (`pip install -e ".[export]"`).
The metadata every writer stores (`encode_metadata`, and where each format keeps it) is
declared here; `swin_flax.deploy.runners` reads it back.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from swin_flax._optional import require
from swin_flax.deploy import litert_rewrites, quantize
from swin_flax.errors import UserInputError
from swin_flax.model.swin import SwinTransformer

# Where each format keeps the metadata: ONNX in `metadata_props`, LiteRT in a flatbuffer
# metadata entry of this name (JSON), StableHLO in this zip entry beside the model's.
LITERT_METADATA_NAME = "swin_flax"
STABLEHLO_MODEL_ENTRY = "model.jax_exported"
STABLEHLO_METADATA_ENTRY = "metadata.json"

# Operators kept in float32 in the fp16 ONNX graph: reductions and exponentials whose
# float16 rounding costs the most accuracy (TensorRT keeps the same layers in float32).
ONNX_FP16_KEEP_FP32 = ["LayerNormalization", "Softmax", "Erf", "ReduceMean", "Pow", "Sqrt"]
ONNX_INPUT_NAME = "images"
ONNX_OUTPUT_NAME = "logits"


class ExportFailedError(UserInputError):
    """A converter (torch.onnx, TFLiteConverter, onnxruntime's quantizer) failed on the
    model; the message holds the converter's reason."""


def converter_failure(route: str, err: Exception) -> ExportFailedError:
    """One line from a converter's exception: MLIR's 'error:' diagnostics when there are
    (TFLite), else the message's last line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    reason = "; ".join(dict.fromkeys(errors[-2:])) or (lines[-1] if lines else type(err).__name__)
    return ExportFailedError(
        f"{route} failed on this model: {reason[:400]} (SWIN_FLAX_DEBUG=1 shows the traceback)"
    )


def encode_metadata(metadata: dict) -> dict[str, str]:
    """Flat str -> str (JSON values): what ONNX's metadata_props can hold, in every format."""
    return {key: json.dumps(value) for key, value in metadata.items()}


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter (CPU feature notes, XLA info) off, errors kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _forward(model: SwinTransformer, params):
    return lambda images: model.apply({"params": params}, images)


def _input_shape(model: SwinTransformer, batch: int | None, layout: str = "NHWC") -> list:
    size, chans = model.img_size, model.in_chans
    shape = [batch, size, size, chans] if layout == "NHWC" else [batch, chans, size, size]
    return shape


# --------------------------------------------------------------------------------------
# ONNX through timm and torch.onnx (dynamo exporter).


def keep_triton_out_after_tensorflow() -> None:
    """triton's native library crashes the process (segmentation fault) when it loads after
    TensorFlow's (TF 2.21, triton 3.x); torch._dynamo (imported by torchvision, timm and
    torch.onnx's dynamo exporter) loads it only to ask whether it is installed, and a CPU
    export never uses it. Once TensorFlow is loaded, triton is therefore marked absent:
    `import triton` raises ImportError instead of crashing."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None


def import_tensorflow(purpose: str):
    """TensorFlow for `purpose`, its C++ start-up chatter off, triton kept out after it."""
    quiet_tensorflow()
    tf = require("tensorflow", purpose, "export")
    keep_triton_out_after_tensorflow()
    return tf


def timm_module(model: SwinTransformer, params):
    """timm's SwinTransformer (eval mode) with our weights, loaded strictly."""
    keep_triton_out_after_tensorflow()  # TensorFlow may have come first (another export)
    torch = require("torch", "the ONNX export", "export")
    swin = require("timm.models.swin_transformer", "the ONNX export", "export")
    safetensors_torch = require("safetensors.torch", "the ONNX export", "export")
    from swin_flax.weights.timm import save_timm_safetensors, timm_model_kwargs

    with tempfile.TemporaryDirectory() as tmp:
        path = save_timm_safetensors(params, Path(tmp) / "model.safetensors", model=model)
        state = safetensors_torch.load_file(str(path))
    module = swin.SwinTransformer(**timm_model_kwargs(model))
    module.load_state_dict(state, strict=True)
    return module.eval().to(torch.float32)


def write_onnx(
    model: SwinTransformer,
    params,
    out: Path,
    *,
    batch: int | None,
    precision: str,
    metadata: dict,
    calibration=None,
) -> dict:
    onnx = require("onnx", "the ONNX export", "export")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        _torch_onnx_export(timm_module(model, params), model, batch, path)
        if precision in quantize.QUANTIZED_PRECISIONS:
            quantized = Path(tmp) / "quantized.onnx"
            try:
                quantize.quantize_onnx(
                    path,
                    quantized,
                    precision,
                    None if calibration is None else np.transpose(calibration, (0, 3, 1, 2)),
                    input_name=ONNX_INPUT_NAME,
                    batch=batch or 1,
                )
            except UserInputError:
                raise
            except Exception as err:  # the quantizer's own failures, as one line
                raise converter_failure("onnxruntime's quantization", err) from err
            path = quantized
        proto = onnx.load(str(path))
    if precision == "fp16":
        float16 = require("onnxruntime.transformers.float16", "the fp16 ONNX export", "export")
        proto = float16.convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=ONNX_FP16_KEEP_FP32
        )
        _sort_nodes(proto.graph)  # the converter appends its input casts at the end
    del proto.metadata_props[:]
    for key, value in encode_metadata(metadata).items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "swin_flax export.py (timm + torch.onnx dynamo)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    info = {
        "nodes": len(proto.graph.node),
        "op_types": len(ops),
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
    }
    if precision in quantize.QUANTIZED_PRECISIONS:
        info["op_kinds"] = quantize.onnx_op_kinds(out)
    return info


def _torch_onnx_export(module, model: SwinTransformer, batch: int | None, path: Path) -> None:
    """timm's module -> a float32 ONNX file (torch.onnx's dynamo exporter)."""
    torch = require("torch", "the ONNX export", "export")
    require("onnxscript", "the ONNX export (torch.onnx's dynamo exporter)", "export")
    example = torch.zeros(_input_shape(model, batch or 2, "NCHW"), dtype=torch.float32)
    dynamic = None
    if batch is None:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=[ONNX_INPUT_NAME],
                output_names=[ONNX_OUTPUT_NAME],
                verbose=False,
            )
        program.save(str(path), external_data=False)
    except Exception as err:  # the exporter's failures, as one line
        raise converter_failure("torch.onnx.export", err) from err


def _sort_nodes(graph) -> None:
    """Order `graph.node` topologically (stable: the original order where it is valid)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise RuntimeError("the fp16 ONNX graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        done = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in done]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# --------------------------------------------------------------------------------------
# LiteRT through jax2tf and the TFLite converter.


def litert_refusal(batch: int | None, precision: str) -> str | None:
    """Why a LiteRT export cannot be made, known before any tracing (None: it can)."""
    if batch is None:
        # jax2tf's shape polymorphism turns the relative-position-bias gather into a
        # dynamic gather, which the TFLite converter cannot lower (TF 2.21).
        return (
            "LiteRT export needs a fixed batch size (--batch N): the TFLite "
            "converter cannot lower Swin's gather with a dynamic batch"
        )
    if precision == "int8" and not litert_rewrites.composites_supported():
        return (
            f"int8 LiteRT needs GELU as a StableHLO composite, which this jax "
            f"({jax.__version__}) cannot serialize for TensorFlow (see "
            "swin_flax/deploy/litert_rewrites.py); export int8-weights, or ONNX int8"
        )
    return None


def write_litert(
    model: SwinTransformer,
    params,
    out: Path,
    *,
    batch: int | None,
    precision: str,
    metadata: dict,
    calibration=None,
) -> dict:
    refusal = litert_refusal(batch, precision)
    if refusal:
        raise UserInputError(refusal)
    tf = import_tensorflow("the LiteRT export (jax2tf + TFLiteConverter)")
    from jax.experimental import jax2tf

    shape = _input_shape(model, batch)
    try:
        with litert_rewrites.litert_tracing():
            function = tf.function(
                jax2tf.convert(_forward(model, params), with_gradient=False),
                autograph=False,
                input_signature=[tf.TensorSpec(shape, tf.float32, name="images")],
            )
            concrete = function.get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)
        quantize.configure_litert_converter(converter, precision, calibration, batch)
        with warnings.catch_warnings():
            # Said of every model with float inputs, which ours keep on purpose.
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            converted = converter.convert()
    except UserInputError:
        raise
    except Exception as err:  # jax2tf's and the converter's failures, as one line
        raise converter_failure("the TFLite converter", err) from err
    content = add_litert_metadata(
        converted, LITERT_METADATA_NAME, json.dumps(encode_metadata(metadata)).encode()
    )
    out.write_bytes(content)
    info = {"bytes": len(content)}
    if precision in quantize.QUANTIZED_PRECISIONS:
        info["op_kinds"] = quantize.litert_op_kinds(content)
    return info


def add_litert_metadata(content: bytes, name: str, value: bytes) -> bytes:
    """The .tflite flatbuffer with a metadata entry `name` (replaced if present)."""
    schema = require("ai_edge_litert.schema_py_generated", "writing LiteRT metadata", "export")
    flatbuffers = require("flatbuffers", "writing LiteRT metadata", "export")
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (name, name.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(content) + len(value) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --------------------------------------------------------------------------------------
# StableHLO through jax.export.


def write_stablehlo(
    model: SwinTransformer,
    params,
    out: Path,
    *,
    batch: int | None,
    precision: str,
    metadata: dict,
    calibration=None,  # no int8 route: StableHLO is exported at fp32 or fp16
) -> dict:
    from jax import export as jax_export

    if precision == "fp16":
        model = model.clone(dtype=jnp.float16)
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float16), params)
    shape = _input_shape(model, batch)
    if batch is None:
        shape[0] = jax_export.symbolic_shape("b")[0]
    spec = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    exported = jax_export.export(jax.jit(_forward(model, params)))(spec)
    serialized = exported.serialize()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(STABLEHLO_MODEL_ENTRY, bytes(serialized))
        archive.writestr(STABLEHLO_METADATA_ENTRY, json.dumps(encode_metadata(metadata), indent=1))
    return {"platforms": list(exported.platforms), "bytes": len(serialized)}
