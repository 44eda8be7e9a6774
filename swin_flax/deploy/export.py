"""Export a checkpoint to ONNX, LiteRT or StableHLO, and check the file against Flax.

    report = export_checkpoint("final_model", "student.onnx", "onnx")

writes the file (see `swin_flax.deploy.formats` for each route; the formats' table is
`swin_flax.deploy.runners.FORMATS`), runs it in its own runtime (onnxruntime, the LiteRT
interpreter, `jax.export` deserialize + call) on a batch of real photos and compares the
logits with the Flax model's (float32, matmul precision 'highest'). The file replaces
OUT only when it passes; above the tolerance it is kept as `OUT.failed-check` and a
UserInputError says by how much it missed. The check images, in order of preference:
the files given (`check_images`), the first test image of each CIFAR-10 class from the
shared archive (upscaled to the model's img_size like in training), or a deterministic
synthetic batch (with a note).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from swin_flax import cli
from swin_flax._files import replacing
from swin_flax.data.images import decode_image
from swin_flax.deploy.runners import FORMATS, load_model, preprocess_images
from swin_flax.errors import UserInputError

PRECISIONS = ("fp32", "fp16")  # export.py's --precision choices
# max |logit difference| against the float32 Flax model.
FP32_TOLERANCE = 1e-4
# fp16: relative to the logits' scale (max |logit|, at least 1), and the top-1 class must
# agree on every image whose float32 top-1/top-2 margin is larger than the tolerance.
FP16_RELATIVE_TOLERANCE = 2e-2
# The shared real photos, beside the repository (absent on users' machines).
CHECK_ARCHIVE_ENV = "SWIN_FLAX_CHECK_ARCHIVE"
DEFAULT_CHECK_ARCHIVE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-images.tar.gz"
)


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

    def summary(self) -> str:
        batch = "dynamic" if self.batch_size is None else self.batch_size
        return (
            f"wrote {self.path} ({self.format}, {self.precision}, batch {batch}, input "
            f"{self.input_layout} float32)\n"
            f"check: {self.num_images} images ({self.check_source}); max |logit "
            f"difference| vs Flax float32 = {self.max_abs_diff:.3g} (tolerance "
            f"{self.tolerance:.3g}); top-1 agreement {self.top1_agreement:.0%}"
        )


# --------------------------------------------------------------------------------------
# Check images.


def check_archive() -> Path | None:
    path = Path(os.environ.get(CHECK_ARCHIVE_ENV) or DEFAULT_CHECK_ARCHIVE)
    return path if path.is_file() else None


def cifar_test_images(archive: Path, per_class: int = 1) -> list[np.ndarray]:
    """The first `per_class` test images of each CIFAR-10 class (uint8 HWC), read from the
    archive without extracting it."""
    found: dict[str, list[np.ndarray]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "test":
                continue
            images = found.setdefault(parts[1], [])
            if len(images) < per_class:
                data = tar.extractfile(member).read()
                images.append(decode_image(data, name=f"{archive}:{member.name}"))
            if len(found) == 10 and all(len(v) == per_class for v in found.values()):
                break
    return [image for name in sorted(found) for image in found[name]]


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


def load_check_images(img_size: int, paths=None) -> tuple[np.ndarray, str]:
    """(preprocessed NHWC float32 batch, description of where it came from)."""
    if paths:
        return preprocess_images(
            [decode_image(p) for p in paths], img_size
        ), f"{len(paths)} given image file(s)"
    archive = check_archive()
    if archive is not None:
        return preprocess_images(
            cifar_test_images(archive), img_size
        ), f"CIFAR-10 test photos from {archive.name}, upscaled to {img_size} px"
    cli.note(
        f"no check images given and no CIFAR-10 archive at {DEFAULT_CHECK_ARCHIVE} "
        f"(set {CHECK_ARCHIVE_ENV} or pass --check-images): checking on a deterministic "
        "synthetic batch"
    )
    return preprocess_images(synthetic_images(img_size), img_size), "synthetic images"


def flax_reference(model, params, images: np.ndarray) -> np.ndarray:
    """Float32 logits of the Flax model with exact (highest precision) matmuls."""
    with jax.default_matmul_precision("highest"):
        forward = jax.jit(lambda x: model.apply({"params": params}, x))
        return np.asarray(forward(images), np.float32)


def compare(
    reference: np.ndarray, got: np.ndarray, precision: str
) -> tuple[float, float, list[str]]:
    """(max |diff|, tolerance, problems) of exported logits against the reference."""
    diff = float(np.max(np.abs(reference - got))) if got.shape == reference.shape else np.inf
    problems = []
    if got.shape != reference.shape:
        return diff, 0.0, [f"logits of shape {got.shape}, expected {reference.shape}"]
    if not np.all(np.isfinite(got)):
        problems.append("non-finite logits")
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


def _check_arguments(fmt: str, out: Path, batch: int | None, precision: str) -> None:
    if fmt not in FORMATS:
        raise UserInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise UserInputError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")
    if batch is not None and batch < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch}")
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
    checkpoint, out, fmt: str, *, batch: int | None = 1, precision: str = "fp32", check_images=None
) -> ExportReport:
    """Write `checkpoint` (a `swin_flax.load_checkpoint` directory) as `fmt` to the file
    `out` (batch None: any batch size) and check it; see the module docstring."""
    from swin_flax.weights.checkpoint import load_checkpoint, load_class_names

    out = Path(os.fspath(out))
    _check_arguments(fmt, out, batch, precision)
    model, params = load_checkpoint(checkpoint)
    class_names = load_class_names(checkpoint)
    metadata = export_metadata(model, fmt, batch, precision, class_names)
    images, source = load_check_images(model.img_size, check_images)

    # Written beside `out` and renamed over it only once it passed the check: a failed
    # or interrupted export never leaves a half-written or unchecked file at `out`.
    with replacing(out) as temporary:
        info = FORMATS[fmt].write(
            model, params, temporary, batch=batch, precision=precision, metadata=metadata
        )
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
    agreement = float(np.mean(reference.argmax(1) == got.argmax(1)))
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
        agreement,
        info,
    )
