"""What an export reads from the user before it writes anything: the arguments, the output
folder, the checkpoint (or a finished training stage) with its class names and
preprocessing, the int8 calibration images, the evaluation set and the parity check's
images. Everything that can be refused is refused here, before any export work.

    check_arguments(fmt, out, batch, precision, calibration)  # nothing read yet
    inputs = export_inputs(checkpoint, precision="int8", batch=1, calibration=..., evaluate=...)

Refusals: an unknown format or precision, a precision the format cannot export, int8
without --calibration, an OUT that is a folder or in a folder that does not exist or cannot
be written, a training stage that has not finished (`swin_flax.deploy.stage_dirs`), and for
int8 too few calibration images for one batch or calibration images that --evaluate scores
(`swin_flax.deploy.image_sets`). The parity check's images, in order of preference: the
files given, the first images of each class of --evaluate, images of the calibration folder
(for int8 ones it was not calibrated on; a folder with no others is said so), or a
deterministic synthetic batch (with a note).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swin_flax import cli
from swin_flax.deploy import image_sets
from swin_flax.deploy.formats import litert_refusal
from swin_flax.deploy.image_sets import Calibration, EvaluationSet
from swin_flax.deploy.preprocess import Preprocessing, as_preprocessing
from swin_flax.deploy.runners import FORMATS, PRECISIONS
from swin_flax.deploy.stage_dirs import model_directory
from swin_flax.errors import UserInputError

CHECK_IMAGES_FROM_DATA = 10  # images of the user's data the parity check runs on


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


def load_check_images(
    preprocessing: Preprocessing | int, paths=None, user_images=None
) -> tuple[np.ndarray, str]:
    """(preprocessed NHWC float32 batch, description of where it came from): the given
    files, else `user_images` ((batch, description) from the user's evaluation or
    calibration data), else a synthetic batch."""
    pre = as_preprocessing(preprocessing)
    if paths:
        return pre([pre.decode(p) for p in paths]), f"{len(paths)} given image file(s)"
    if user_images is not None:
        return user_images
    cli.note(
        "no check images given (--check-images, --evaluate or --calibration): checking "
        "on a deterministic synthetic batch"
    )
    return pre(synthetic_images(pre.img_size)), "synthetic images"


def check_arguments(fmt: str, out: Path, batch: int | None, precision: str, calibration) -> None:
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
    check_writable_folder(out.parent, "give the file to write in a folder you can write to")


def check_writable_folder(folder: Path, advice: str) -> None:
    """Refuse, before any work, a folder no file can be written into (read-only file
    system, no permission): a real file is created and removed, since os.access answers
    yes for root on a read-only mount."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".swin_flax-write-test-"):
            pass
    except OSError as err:
        raise UserInputError(
            f"cannot write into {folder} ({err.strerror or err}); {advice}"
        ) from None


@dataclass
class ExportInputs:
    """A checkpoint and the user's images, read (and refused) before anything is exported."""

    model: object
    params: object
    class_names: list[str] | None
    preprocessing: Preprocessing
    eval_set: EvaluationSet | None
    calibration: Calibration | None
    check_images: np.ndarray
    check_source: str


def export_inputs(
    checkpoint,
    *,
    precision: str,
    batch: int | None,
    check_images=None,
    calibration=None,
    calibration_count: int = image_sets.DEFAULT_CALIBRATION_COUNT,
    calibration_seed: int = 0,
    evaluate=None,
) -> ExportInputs:
    """The model, how its images are preprocessed, and the user's images: int8 calibration
    (refused when too few for one batch, or shared with `evaluate`), the evaluation set and
    the parity check's images. Other precisions take from `calibration` only check images."""
    from swin_flax.weights.checkpoint import load_checkpoint, load_class_names, load_preprocessing

    checkpoint = model_directory(checkpoint)
    model, params = load_checkpoint(checkpoint)
    class_names = load_class_names(checkpoint)
    pre = Preprocessing(model.img_size, load_preprocessing(checkpoint)["stored_size"])
    eval_set = (
        image_sets.evaluation_set(evaluate, class_names, model.num_classes) if evaluate else None
    )
    calib = None
    if calibration is not None:
        int8 = precision == "int8"
        calib = image_sets.calibration_set(
            calibration,
            pre,
            calibration_count if int8 else CHECK_IMAGES_FROM_DATA,
            calibration_seed,
            held_out=CHECK_IMAGES_FROM_DATA if int8 and eval_set is None else 0,
        )
        if int8:
            image_sets.check_calibration_batches(calib, batch, calibration)
            if eval_set is not None:
                image_sets.check_calibration_unseen(calib, eval_set)
    user_images = None if check_images else user_check_images(pre, eval_set, calib, precision)
    images, source = load_check_images(pre, check_images, user_images)
    return ExportInputs(model, params, class_names, pre, eval_set, calib, images, source)


def user_check_images(
    pre: Preprocessing, eval_set, calibration: Calibration | None, precision: str
) -> tuple[np.ndarray, str] | None:
    """The parity check's images from the user's data: the first images of each class of
    the evaluation set, else images of the calibration folder; for int8 ones it was not
    calibrated on, or, when the folder holds no others, the calibration images with a note."""
    if eval_set is not None:
        count = CHECK_IMAGES_FROM_DATA
        return eval_set.sample(pre, count), f"first images of {eval_set.description}"
    if calibration is None:
        return None
    if precision != "int8":
        count = min(CHECK_IMAGES_FROM_DATA, len(calibration.images))
        return calibration.images[:count], f"{count} images of the calibration folder"
    if calibration.held_out is not None:
        held_out = calibration.held_out
        return held_out, f"{len(held_out)} images of the calibration folder not calibrated on"
    count = min(CHECK_IMAGES_FROM_DATA, len(calibration.images))
    cli.note(
        "the calibration folder holds no images besides the ones calibrated on, so the int8 "
        "parity check runs on those: give --evaluate or --check-images to check on others"
    )
    return calibration.images[:count], (
        f"{count} calibration images themselves: not checked on images it was not calibrated on"
    )
