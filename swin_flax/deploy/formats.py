"""Writers of the three deployment formats; `swin_flax.deploy.export` picks one (from the
table `swin_flax.deploy.runners.FORMATS`) and checks it.

Each writer takes the Flax model and parameters, the fixed batch size (None: dynamic),
the precision ('fp32' or 'fp16') and the metadata to store, and writes one file:

  onnx       our timm export (`save_timm_safetensors`) -> timm SwinTransformer ->
             `torch.onnx.export(dynamo=True)`; input NCHW float32 like timm. fp16: the
             float32 graph converted by onnxruntime's float16 tool with float32 inputs and
             outputs, LayerNorm/Softmax/GELU(Erf)/ReduceMean kept in float32.
  litert     `jax2tf.convert` of the Flax forward -> `tf.lite.TFLiteConverter` (TFLite
             builtin ops only); input NHWC float32; fixed batch size only. fp16: float16 weights (the converter's
             float16 quantization), computed in float32 on CPU, in float16 on GPU delegates.
  stablehlo  `jax.export` of the jitted Flax forward (weights as constants), serialized,
             in a zip with metadata.json; input NHWC float32. fp16: the model built with
             dtype=float16 and float16 parameters (logits float32).

Export libraries are imported inside the functions (`pip install -e ".[export]"`).
The metadata every writer stores (`encode_metadata`, and where each format keeps it) is
declared here; `swin_flax.deploy.runners` reads it back.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from swin_flax._optional import require
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


def timm_module(model: SwinTransformer, params):
    """timm's SwinTransformer (eval mode) with our weights, loaded strictly."""
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
    model: SwinTransformer, params, out: Path, *, batch: int | None, precision: str, metadata: dict
) -> dict:
    torch = require("torch", "the ONNX export", "export")
    onnx = require("onnx", "the ONNX export", "export")
    require("onnxscript", "the ONNX export (torch.onnx's dynamo exporter)", "export")

    module = timm_module(model, params)
    example = torch.zeros(_input_shape(model, batch or 2, "NCHW"), dtype=torch.float32)
    dynamic = None
    if batch is None:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=[ONNX_INPUT_NAME],
            output_names=[ONNX_OUTPUT_NAME],
            verbose=False,
        )
        program.save(str(Path(tmp) / "model.onnx"), external_data=False)
        proto = onnx.load(str(Path(tmp) / "model.onnx"))
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
    return {
        "nodes": len(proto.graph.node),
        "op_types": len(ops),
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
    }


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


def write_litert(
    model: SwinTransformer, params, out: Path, *, batch: int | None, precision: str, metadata: dict
) -> dict:
    if batch is None:
        # jax2tf's shape polymorphism turns the relative-position-bias gather into a
        # dynamic gather, which the TFLite converter cannot lower (TF 2.21).
        raise UserInputError(
            "LiteRT export needs a fixed batch size (--batch N): the TFLite "
            "converter cannot lower Swin's gather with a dynamic batch"
        )
    quiet_tensorflow()
    tf = require("tensorflow", "the LiteRT export (jax2tf + TFLiteConverter)", "export")
    from jax.experimental import jax2tf

    shape = _input_shape(model, batch)
    converted = jax2tf.convert(_forward(model, params), with_gradient=False)
    function = tf.function(
        converted,
        autograph=False,
        input_signature=[tf.TensorSpec(shape, tf.float32, name="images")],
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    content = add_litert_metadata(
        converter.convert(), LITERT_METADATA_NAME, json.dumps(encode_metadata(metadata)).encode()
    )
    out.write_bytes(content)
    return {"bytes": len(content)}


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
    model: SwinTransformer, params, out: Path, *, batch: int | None, precision: str, metadata: dict
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
