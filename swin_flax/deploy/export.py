"""Export a checkpoint to ONNX, LiteRT or StableHLO, check the file against Flax, and
measure it on the user's images.

    report = export_checkpoint("final_model", "student.onnx", "onnx")
    report = export_checkpoint(ckpt, "s.tflite", "litert", precision="int8",
                               calibration="data/train", evaluate="data/test")

writes the file (see `swin_flax.deploy.formats` for each route and `quantize` for int8;
the formats' table is `swin_flax.deploy.runners.FORMATS`), runs it in its own runtime
(onnxruntime, the LiteRT interpreter, `jax.export` deserialize + call) on a few images and
compares the logits with the Flax model's (float32, matmul precision 'highest'). The file
replaces OUT only when it passes; otherwise it is kept as `OUT.failed-check` and a
UserInputError says by how much it missed. The check images, in order of preference: the
files given (`check_images`), the first images of each class of `evaluate`, the first
calibration images, or a deterministic synthetic batch (with a note).

int8 and int8-weights (ONNX, LiteRT) are calibrated on `calibration` (a folder of images,
`calibration_count` of them chosen with `calibration_seed`; int8-weights needs none) and
checked by their relative logit error, on images it was not calibrated on (of `evaluate`,
else further images of the calibration folder; a folder with no others is said so); the
report lists which ops run in int8 and which stay float. With `evaluate` (a folder of class
folders, or tfds:NAME[:SPLIT]) the file is then run over every image: its top-1 next to the
Flax checkpoint's, their agreement, the file's size and CPU latency
(`swin_flax.deploy.evaluate`). int8 calibrated on images `evaluate` scores is refused.

Refused before any work: an OUT that cannot be written, a training stage that has not
finished (`swin_flax.deploy.stage_dirs`), too few calibration images for one batch.
Images are preprocessed as training evaluated them (`swin_flax.deploy.preprocess`: the
checkpoint's stored size, then its img_size), and the file's metadata says how.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from swin_flax._files import replacing
from swin_flax.deploy import image_sets
from swin_flax.deploy.evaluate import Evaluation, evaluate_file, flax_predictions
from swin_flax.deploy.formats import ExportFailedError
from swin_flax.deploy.inputs import ExportInputs, check_arguments, export_inputs
from swin_flax.deploy.preprocess import Preprocessing
from swin_flax.deploy.quantize import QUANTIZED_PRECISIONS, describe_op_kinds
from swin_flax.deploy.runners import FORMATS, load_model
from swin_flax.errors import UserInputError

# max |logit difference| against the float32 Flax model.
FP32_TOLERANCE = 1e-4
# fp16: relative to the logits' scale (max |logit|, at least 1), and the top-1 class must
# agree on every image whose float32 top-1/top-2 margin is larger than the tolerance.
FP16_RELATIVE_TOLERANCE = 2e-2
# int8, int8-weights: RMS(logit difference) / std(float32 logits). Quantized Swins land
# near 0.02 (int8 weights) to 0.1 (int8); a file above 0.5 computes mostly noise (e.g. a
# broken calibration or a 16x8 scheme) and fails the check.
INT8_RELATIVE_RMS_TOLERANCE = 0.5


@dataclass
class ExportReport:
    path: Path
    format: str
    precision: str
    batch_size: int | None
    input_layout: str
    check_source: str
    num_images: int
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    info: dict = field(default_factory=dict)
    relative_rms: float = 0.0  # RMS(logit difference) / std(Flax logits)
    calibration_source: str | None = None
    evaluation: Evaluation | None = None

    def summary(self) -> str:
        batch = "dynamic" if self.batch_size is None else self.batch_size
        quantized = self.precision in QUANTIZED_PRECISIONS
        measure = (
            f"relative RMS logit error {self.relative_rms:.3g} (tolerance {self.tolerance:.3g})"
            f", max |logit difference| {self.max_abs_diff:.3g}"
            if quantized
            else f"max |logit difference| vs Flax float32 = {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:.3g})"
        )
        lines = [
            f"wrote {self.path} ({self.format}, {self.precision}, batch {batch}, input "
            f"{self.input_layout} float32)",
            f"check: {self.num_images} images ({self.check_source}); {measure}; top-1 "
            f"agreement {self.top1_agreement:.0%}",
        ]
        if self.calibration_source:
            lines.append(f"calibration: {self.calibration_source}")
        if "op_kinds" in self.info:
            lines.append(f"ops: {describe_op_kinds(self.info['op_kinds'])}")
        if self.evaluation is not None:
            lines.append(self.evaluation.summary())
        return "\n".join(lines)


def flax_reference(model, params, images: np.ndarray) -> np.ndarray:
    """Float32 logits of the Flax model with exact (highest precision) matmuls."""
    with jax.default_matmul_precision("highest"):
        forward = jax.jit(lambda x: model.apply({"params": params}, x))
        return np.asarray(forward(images), np.float32)


def relative_rms(reference: np.ndarray, got: np.ndarray) -> float:
    """RMS(logit difference) / std(reference logits): 0 for a perfect copy, about 1.4 for
    logits unrelated to the reference."""
    scale = float(np.std(reference)) or 1.0
    return float(np.sqrt(np.mean((reference - got) ** 2)) / scale)


def compare(
    reference: np.ndarray, got: np.ndarray, precision: str
) -> tuple[float, float, list[str]]:
    """(max |diff|, tolerance, problems) of exported logits against the reference; for
    int8 precisions the tolerance bounds `relative_rms`, else the max |diff|."""
    if got.shape != reference.shape:
        return np.inf, 0.0, [f"logits of shape {got.shape}, expected {reference.shape}"]
    diff = float(np.max(np.abs(reference - got)))
    if not np.all(np.isfinite(got)):
        return diff, 0.0, ["non-finite logits"]
    problems = []
    if precision in QUANTIZED_PRECISIONS:
        tolerance, error = INT8_RELATIVE_RMS_TOLERANCE, relative_rms(reference, got)
        if error > tolerance:
            problems.append(f"relative RMS logit error {error:.3g} > tolerance {tolerance:.3g}")
        return diff, tolerance, problems
    if precision == "fp32":
        tolerance = FP32_TOLERANCE
    else:
        tolerance = FP16_RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))
        top2 = np.sort(reference, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > tolerance
        flipped = clear & (reference.argmax(1) != got.argmax(1))
        if flipped.any():
            problems.append(
                f"top-1 class differs on {int(flipped.sum())} of {int(clear.sum())} "
                "images with a clear float32 winner"
            )
    if diff > tolerance:
        problems.append(f"max |logit difference| {diff:.3g} > tolerance {tolerance:.3g}")
    return diff, tolerance, problems


# --------------------------------------------------------------------------------------
# The whole export.


def export_metadata(
    model, fmt: str, batch: int | None, precision: str, class_names, pre: Preprocessing
) -> dict:
    from swin_flax import __version__
    from swin_flax.data.augment import IMAGENET_MEAN, IMAGENET_STD
    from swin_flax.model.swin import model_config

    layout = FORMATS[fmt].input_layout
    size, chans = model.img_size, model.in_chans
    spatial = [size, size, chans] if layout == "NHWC" else [chans, size, size]
    metadata = {
        "format": fmt,
        "precision": precision,
        "input_layout": layout,
        "input_shape": [batch if batch else "batch", *spatial],
        "input_dtype": "float32",
        "batch_size": batch,
        "img_size": size,
        "stored_size": pre.stored_size,
        "num_classes": model.num_classes,
        "preprocessing": pre.describe(),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "model_config": model_config(model),
        "swin_flax_version": __version__,
    }
    if class_names is not None:
        metadata["class_names"] = list(class_names)
    return metadata


def export_checkpoint(
    checkpoint,
    out,
    fmt: str,
    *,
    batch: int | None = 1,
    precision: str = "fp32",
    check_images=None,
    calibration=None,
    calibration_count: int = image_sets.DEFAULT_CALIBRATION_COUNT,
    calibration_seed: int = 0,
    evaluate=None,
    threads: int | None = None,
) -> ExportReport:
    """Write `checkpoint` (a `swin_flax.load_checkpoint` directory, or a finished training
    stage) as `fmt` to the file `out` (batch None: any batch size), check it and, with
    `evaluate`, measure it; see the module docstring. The output folder and the user's
    folders are checked (and refused) before anything is exported."""
    out = Path(os.fspath(out))
    check_arguments(fmt, out, batch, precision, calibration)
    inputs = export_inputs(
        checkpoint,
        precision=precision,
        batch=batch,
        check_images=check_images,
        calibration=calibration,
        calibration_count=calibration_count,
        calibration_seed=calibration_seed,
        evaluate=evaluate,
    )
    report = write_checked(inputs, out, fmt, batch, precision)
    if inputs.eval_set is not None:
        flax = flax_predictions(
            inputs.model, inputs.params, inputs.eval_set, preprocessing=inputs.preprocessing
        )
        report.evaluation = evaluate_file(out, fmt, inputs.eval_set, flax, threads=threads)
    return report


def write_checked(inputs: ExportInputs, out, fmt, batch, precision) -> ExportReport:
    """Write the file beside `out`, check it, and rename it over `out` once it passed: a
    failed or interrupted export never leaves a half-written or unchecked file at `out`."""
    model, params, images = inputs.model, inputs.params, inputs.check_images
    int8 = precision == "int8" and inputs.calibration is not None
    metadata = export_metadata(
        model, fmt, batch, precision, inputs.class_names, inputs.preprocessing
    )
    with replacing(out) as temporary:
        info = FORMATS[fmt].write(
            model,
            params,
            temporary,
            batch=batch,
            precision=precision,
            metadata=metadata,
            calibration=inputs.calibration.images if int8 else None,
        )
        if fmt == "litert" and precision in QUANTIZED_PRECISIONS:
            _check_litert_prepares(temporary, out)
        got = load_model(temporary, kind=fmt)(images)
        reference = flax_reference(model, params, images)
        diff, tolerance, problems = compare(reference, got, precision)
        if problems:
            failed = out.with_name(out.name + ".failed-check")
            os.replace(temporary, failed)
            raise UserInputError(
                f"the {fmt} {precision} export does not match the Flax model on {len(images)} "
                f"images ({inputs.check_source}): {'; '.join(problems)}. The file is kept as "
                f"{failed} for inspection"
            )
    return ExportReport(
        out,
        fmt,
        precision,
        batch,
        metadata["input_layout"],
        inputs.check_source,
        len(images),
        diff,
        tolerance,
        float(np.mean(reference.argmax(1) == got.argmax(1))),
        info,
        relative_rms=relative_rms(reference, got),
        calibration_source=inputs.calibration.description if int8 else None,
    )


# The LiteRT interpreter aborts the whole process (SIGABRT, no Python exception) when an
# int8 model's scales are out of its range; a child process prepares the file first.
_PREPARE_LITERT = (
    "import sys\n"
    "from ai_edge_litert.interpreter import Interpreter\n"
    "Interpreter(model_path=sys.argv[1]).allocate_tensors()\n"
)


def _check_litert_prepares(path: Path, out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PREPARE_LITERT, str(path)], capture_output=True, text=True
    )
    if done.returncode == 0:
        return
    failed = out.with_name(out.name + ".failed-check")
    os.replace(path, failed)
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    last = (done.stderr.strip().splitlines() or [""])[-1][:300]
    raise ExportFailedError(
        f"the LiteRT interpreter cannot prepare the quantized model ({how}{': ' + last if last else ''}); "
        f"the file is kept as {failed} for inspection"
    )
