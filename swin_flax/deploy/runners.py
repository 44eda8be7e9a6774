"""Run an exported Swin (ONNX, LiteRT, StableHLO) or a checkpoint on preprocessed images.

`load_model(path)` returns a `Runner`: `runner(images)` maps a float32 NHWC batch,
preprocessed as in training (`runner.preprocessing`, `swin_flax.deploy.preprocess`), to
float32 logits, whatever the file's input layout and batch size; `runner.metadata` is what
the exporter stored (input layout, shape, class names, stored size, ...). The export
libraries are imported inside the functions: `pip install -e ".[export]"` brings them.

`FORMATS` is the one table of the export formats: per format its writer
(`swin_flax.deploy.formats`), its loader (here), its input layout and file suffix.

Metadata of an exported file (the same keys in every format):
  ONNX: `metadata_props`; LiteRT: a flatbuffer metadata entry named 'swin_flax' (JSON);
  StableHLO: 'metadata.json' beside 'model.jax_exported' in the zip file.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from swin_flax._optional import require
from swin_flax.deploy.formats import (
    LITERT_METADATA_NAME,
    STABLEHLO_METADATA_ENTRY,
    STABLEHLO_MODEL_ENTRY,
    write_litert,
    write_onnx,
    write_stablehlo,
)
from swin_flax.deploy.preprocess import Preprocessing
from swin_flax.deploy.stage_dirs import model_directory
from swin_flax.errors import CheckpointError, UserInputError

# --------------------------------------------------------------------------------------
# Runners.


@dataclass
class Runner:
    """`runner(images_nhwc_float32) -> logits (N, classes) float32` for any batch size."""

    predict_batch: Callable[[np.ndarray], np.ndarray]  # one batch of `batch_size`
    metadata: dict
    batch_size: int | None  # None: any batch size
    info: dict = field(default_factory=dict)

    @property
    def img_size(self) -> int:
        return int(self.metadata["img_size"])

    @property
    def class_names(self) -> list[str] | None:
        return self.metadata.get("class_names")

    @property
    def preprocessing(self) -> Preprocessing:
        """How images become this model's input: training's evaluation path."""
        return Preprocessing.from_metadata(self.metadata)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if self.batch_size is None:
            return np.asarray(self.predict_batch(images), np.float32)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            short = self.batch_size - len(chunk)
            if short:  # a fixed-batch model: pad the last chunk, drop the padding's logits
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
            outputs.append(np.asarray(self.predict_batch(chunk), np.float32)[: len(chunk) - short])
        return np.concatenate(outputs)


def _to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if layout == "NCHW" else images


def load_onnx(path: Path, threads: int | None = None) -> Runner:
    onnx = require("onnx", "reading an ONNX model", "export")
    ort = require("onnxruntime", "running an ONNX model", "export")
    proto = onnx.load(str(path), load_external_data=False)
    metadata = decode_metadata({p.key: p.value for p in proto.metadata_props}, path)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    layout = metadata["input_layout"]
    return Runner(
        lambda x: session.run(None, {name: _to_layout(x, layout)})[0],
        metadata,
        metadata.get("batch_size"),
        {"runtime": f"onnxruntime {ort.__version__}"},
    )


def read_litert_metadata(content: bytes) -> dict[str, bytes]:
    """name -> bytes of the metadata entries of a .tflite flatbuffer."""
    schema = require("ai_edge_litert.schema_py_generated", "reading a LiteRT model", "export")
    model = schema.Model.GetRootAs(content, 0)
    entries = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        buffer = model.Buffers(entry.Buffer())
        entries[entry.Name().decode()] = (
            buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
        )
    return entries


def load_litert(path: Path, threads: int | None = None) -> Runner:
    interpreter_module = require("ai_edge_litert.interpreter", "running a LiteRT model", "export")
    content = path.read_bytes()
    raw = read_litert_metadata(content).get(LITERT_METADATA_NAME)
    if raw is None:
        raise UserInputError(
            f"{path} has no '{LITERT_METADATA_NAME}' metadata: not exported "
            "by swin_flax's export.py"
        )
    metadata = decode_metadata(json.loads(raw.decode()), path)
    interpreter = interpreter_module.Interpreter(model_content=content, num_threads=threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    fixed = metadata.get("batch_size")
    state = {"batch": None}

    def predict(images):
        if state["batch"] != len(images):
            interpreter.resize_tensor_input(input_index, list(images.shape), strict=bool(fixed))
            interpreter.allocate_tensors()
            state["batch"] = len(images)
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return Runner(predict, metadata, fixed, {"runtime": "LiteRT interpreter (ai-edge-litert)"})


def load_stablehlo(path: Path, threads: int | None = None) -> Runner:
    from jax import export as jax_export

    try:
        with zipfile.ZipFile(path) as archive:
            serialized = archive.read(STABLEHLO_MODEL_ENTRY)
            metadata = json.loads(archive.read(STABLEHLO_METADATA_ENTRY).decode())
    except (zipfile.BadZipFile, KeyError) as e:
        raise UserInputError(f"{path} is not a StableHLO export of export.py ({e})") from None
    metadata = decode_metadata(metadata, path)
    exported = jax_export.deserialize(bytearray(serialized))
    return Runner(
        lambda x: exported.call(x),
        metadata,
        metadata.get("batch_size"),
        {"runtime": "jax.export (XLA CPU)"},
    )


def load_checkpoint_runner(path: Path) -> Runner:
    import jax

    from swin_flax.model.swin import model_config
    from swin_flax.weights.checkpoint import load_checkpoint, load_class_names, load_preprocessing

    model, params = load_checkpoint(path)
    forward = jax.jit(lambda x: model.apply({"params": params}, x))
    metadata = {
        "img_size": model.img_size,
        "stored_size": load_preprocessing(path)["stored_size"],
        "input_layout": "NHWC",
        "batch_size": None,
        "class_names": load_class_names(path),
        "model_config": model_config(model),
    }
    return Runner(forward, metadata, None, {"runtime": f"jax {jax.__version__} (Flax)"})


# --------------------------------------------------------------------------------------
# The export formats, declared once: `load_model`, export.py and the benchmarks read them here.


@dataclass(frozen=True)
class ExportFormat:
    """One deployment format: how export.py writes it and how it is run."""

    name: str
    # (model, params, out, *, batch, precision, metadata, calibration) -> info
    write: Callable[..., dict]
    load: Callable[[Path, int | None], Runner]  # (path, threads) -> Runner
    input_layout: str  # of the float32 images it takes: "NCHW" or "NHWC"
    suffix: str  # of the files it is written to, by convention
    precisions: tuple[str, ...] = ("fp32", "fp16")  # what its writer can export


# Every precision export.py knows, in the deployment table's order: float, then int8
# weights (dynamic range), then int8 weights and activations (calibrated).
PRECISIONS = ("fp32", "fp16", "int8-weights", "int8")

FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("onnx", write_onnx, load_onnx, "NCHW", ".onnx", PRECISIONS),  # like timm
        ExportFormat("litert", write_litert, load_litert, "NHWC", ".tflite", PRECISIONS),
        ExportFormat("stablehlo", write_stablehlo, load_stablehlo, "NHWC", ".zip"),
    )
}


def _weights_file_kind(path: Path, head: bytes) -> str | None:
    """What a file of weights that is no export holds (torch.save's zip or pickle,
    safetensors), from its content; None for anything else."""
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return None
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return "a PyTorch checkpoint (a torch.save zip archive)"
        return None
    if head[:1] == b"\x80":
        return "a PyTorch checkpoint (a torch.save pickle)"
    if len(head) >= 10 and head[8:10] == b'{"':  # u64 header length, then the JSON header
        return "a .safetensors weights file"
    return None


def detect_format(path: Path) -> str:
    """'checkpoint', 'onnx', 'litert' or 'stablehlo', from the file's content and suffix
    together: content that is no export (PyTorch or safetensors weights) is named as what
    it is, whatever the suffix says; an ONNX protobuf, which has no magic number, needs
    the .onnx suffix and its first field (ir_version)."""
    if path.is_dir():
        return "checkpoint"
    with open(path, "rb") as f:
        head = f.read(16)
    named = next((f.name for f in FORMATS.values() if path.suffix.lower() == f.suffix), None)
    articles = {"onnx": "an ONNX", "litert": "a LiteRT", "stablehlo": "a StableHLO"}
    as_named = f" is named like {articles[named]} export but" if named else ""
    if head[4:8] == b"TFL3":
        return "litert"
    weights = _weights_file_kind(path, head)
    if weights:
        raise UserInputError(
            f"{path}{as_named} holds {weights}, not a model written by export.py; convert "
            "Swin weights with convert_timm_weights.py, then export that checkpoint with "
            "export.py (predict.py runs the checkpoint directory too)"
        )
    if head[:4] == b"PK\x03\x04":
        return "stablehlo"
    if named == "onnx":
        if head[:1] == b"\x08":  # field 1, ir_version: what every ONNX model starts with
            return "onnx"
        raise UserInputError(
            f"{path}{as_named} does not start like an ONNX protobuf (it starts with "
            f"{head[:8]!r}); give a model written by export.py"
        )
    raise UserInputError(
        f"{path} is neither a checkpoint directory nor an exported model "
        "(.onnx, a LiteRT .tflite, or a StableHLO zip written by export.py)"
    )


def load_model(
    path: str | os.PathLike, threads: int | None = None, *, kind: str | None = None
) -> Runner:
    """A Runner for a checkpoint directory or a file written by export.py (`kind`: its
    format when known, else detected from the content)."""
    path = model_directory(path)  # a training stage: its final_model/, or why there is none
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file or checkpoint directory")
    kind = kind or detect_format(path)
    if kind == "checkpoint":
        return load_checkpoint_runner(path)
    return FORMATS[kind].load(path, threads)


# --------------------------------------------------------------------------------------
# Metadata: flat str -> str (JSON values), the same keys in every format
# (`swin_flax.deploy.formats.encode_metadata` writes them).


def decode_metadata(raw: dict, path: Path) -> dict:
    try:
        metadata = {
            key: json.loads(value) if isinstance(value, str) else value
            for key, value in raw.items()
        }
    except json.JSONDecodeError as e:
        raise UserInputError(f"{path}: unreadable swin_flax metadata ({e})") from None
    missing = {"img_size", "input_layout"} - set(metadata)
    if missing:
        raise UserInputError(
            f"{path} lacks the swin_flax metadata {sorted(missing)}: not "
            "exported by swin_flax's export.py"
        )
    return metadata


def top_k(logits: np.ndarray, k: int = 5) -> list[list[tuple[int, float]]]:
    """Per row, the k most probable classes as (index, softmax probability)."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1)[:, :k]
    return [[(int(i), float(row[i])) for i in idx] for row, idx in zip(probs, order)]
