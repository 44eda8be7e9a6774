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
checked by their relative logit error; the report lists which ops run in int8 and which
stay float. With `evaluate` (a folder of class folders, or tfds:NAME[:SPLIT]) the file is
then run over every image: its top-1 next to the Flax checkpoint's, their agreement, the
file's size and CPU latency (`swin_flax.deploy.evaluate`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from swin_flax import cli
from swin_flax._files import replacing
from swin_flax.data.images import decode_image
from swin_flax.deploy import image_sets
from swin_flax.deploy.evaluate import Evaluation, evaluate_file, flax_predictions
from swin_flax.deploy.formats import ExportFailedError, litert_refusal
from swin_flax.deploy.quantize import QUANTIZED_PRECISIONS, describe_op_kinds
from swin_flax.deploy.runners import FORMATS, PRECISIONS, load_model, preprocess_images
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
CHECK_IMAGES_FROM_DATA = 10  # images of the user's data the parity check runs on


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


# --------------------------------------------------------------------------------------
# Check images.


def synthetic_images(img_size: int, count: int = 8) -> list[np.ndarray]:
    """Deterministic smooth colour images (gradients plus a little noise), uint8 HWC."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0.0, 1.0, img_size)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = []
    for _ in range(count):
        a, b, c = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3), rng.uniform(0.2, 0.8, 3)
        image = (
            c + a * yy[..., None] + b * xx[..., None] + rng.normal(0, 0.05, (img_size,) * 2 + (3,))
        )
        images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return images


def load_check_images(img_size: int, paths=None, user_images=None) -> tuple[np.ndarray, str]:
    """(preprocessed NHWC float32 batch, description of where it came from): the given
    files, else `user_images` ((batch, description) from the user's evaluation or
    calibration data), else a synthetic batch."""
    if paths:
        return preprocess_images(
            [decode_image(p) for p in paths], img_size
        ), f"{len(paths)} given image file(s)"
    if user_images is not None:
        return user_images
    cli.note(
        "no check images given (--check-images, --evaluate or --calibration): checking "
        "on a deterministic synthetic batch"
    )
    return preprocess_images(synthetic_images(img_size), img_size), "synthetic images"


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


def _check_arguments(fmt: str, out: Path, batch: int | None, precision: str, calibration) -> None:
    """Everything that refuses an export before the checkpoint is even read."""
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise UserInputError(
            f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}"
        )
    if precision not in FORMATS[fmt].precisions:
        supported = [f for f, spec in FORMATS.items() if precision in spec.precisions]
        raise UserInputError(
            f"{fmt} exports {' or '.join(FORMATS[fmt].precisions)} only; {precision} is "
            f"exported to {' and '.join(supported)}"
        )
    if batch is not None and batch < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch}")
    if fmt == "litert":
        refusal = litert_refusal(batch, precision)
        if refusal:
            raise UserInputError(refusal)
    if precision == "int8" and calibration is None:
        raise UserInputError(
            "int8 needs representative images to calibrate its activation ranges: "
            "--calibration DIR (e.g. the training images; a few hundred are used)"
        )
    if out.is_dir():
        raise UserInputError(f"{out} is a directory; give the path of the file to write")
    if not out.parent.is_dir():
        raise UserInputError(f"{out.parent} does not exist; create it first")


def export_metadata(model, fmt: str, batch: int | None, precision: str, class_names) -> dict:
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
        "num_classes": model.num_classes,
        "preprocessing": "RGB, bilinear resize to img_size, (x/255 - mean) / std",
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
    """Write `checkpoint` (a `swin_flax.load_checkpoint` directory) as `fmt` to the file
    `out` (batch None: any batch size), check it and, with `evaluate`, measure it; see the
    module docstring. The user's folders are read (and refused) before anything is
    exported."""
    from swin_flax.weights.checkpoint import load_checkpoint, load_class_names

    out = Path(os.fspath(out))
    _check_arguments(fmt, out, batch, precision, calibration)
    model, params = load_checkpoint(checkpoint)
    class_names = load_class_names(checkpoint)
    eval_set = (
        image_sets.evaluation_set(evaluate, class_names, model.num_classes) if evaluate else None
    )
    calibration_images = calibration_source = None
    if calibration is not None:  # other precisions take only the parity check's images
        count = calibration_count if precision == "int8" else CHECK_IMAGES_FROM_DATA
        calibration_images, calibration_source = image_sets.calibration_images(
            calibration, model.img_size, count, calibration_seed
        )
    images, source = load_check_images(
        model.img_size, check_images, user_check_images(model, eval_set, calibration_images)
    )
    if precision != "int8":
        calibration_images = calibration_source = None
    report = write_checked(
        model, params, out, fmt, batch, precision, class_names, images, source, calibration_images
    )
    report.calibration_source = calibration_source
    if eval_set is not None:
        flax = flax_predictions(model, params, eval_set)
        report.evaluation = evaluate_file(out, fmt, eval_set, flax, threads=threads)
    return report


def user_check_images(model, eval_set, calibration_images) -> tuple[np.ndarray, str] | None:
    """The parity check's images from the user's data: the first images of each class of
    the evaluation set, else the first calibration images."""
    if eval_set is not None:
        count = CHECK_IMAGES_FROM_DATA
        return eval_set.sample(model.img_size, count), f"first images of {eval_set.description}"
    if calibration_images is not None:
        count = min(CHECK_IMAGES_FROM_DATA, len(calibration_images))
        return calibration_images[:count], f"{count} calibration images"
    return None


def write_checked(
    model, params, out, fmt, batch, precision, class_names, images, source, calibration
) -> ExportReport:
    """Write the file beside `out`, check it, and rename it over `out` once it passed: a
    failed or interrupted export never leaves a half-written or unchecked file at `out`."""
    metadata = export_metadata(model, fmt, batch, precision, class_names)
    with replacing(out) as temporary:
        info = FORMATS[fmt].write(
            model,
            params,
            temporary,
            batch=batch,
            precision=precision,
            metadata=metadata,
            calibration=calibration,
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
                f"images ({source}): {'; '.join(problems)}. The file is kept as {failed} for "
                "inspection"
            )
    return ExportReport(
        out,
        fmt,
        precision,
        batch,
        metadata["input_layout"],
        source,
        len(images),
        diff,
        tolerance,
        float(np.mean(reference.argmax(1) == got.argmax(1))),
        info,
        relative_rms=relative_rms(reference, got),
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
