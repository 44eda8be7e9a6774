"""Pre-flight checks: every mistake that can be found before anything trains is reported
then, not after the teacher's hours of fine-tuning.

`check_settings` needs no data (values, models, paths, devices); `check_data` runs once the
data sets are loaded (batch sizes against their size, their memory against the device's).
Single values are checked where they are declared (`swin_flax.settings`); what is here
relates several settings, or a setting to the world (files, models, devices).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax

from swin_flax.data import placement
from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.model.swin import SwinTransformer, model_config
from swin_flax.pipeline import stage_lengths, student_blocks, sweeps
from swin_flax.pipeline.variants import StudentVariant
from swin_flax.settings import RunSettings, range_problems
from swin_flax.training.distributed import check_batch_size, make_mesh
from swin_flax.weights import checkpoint, transfer

# The fields a transferred student must share with its teacher (only depths may differ).
TRANSFER_SHARED_FIELDS = ("embed_dim", "num_heads", "window_size", "patch_size", "mlp_ratio")


def load_settings(config) -> RunSettings:
    """The typed settings of a config, with every problem that needs no data reported at
    once: unknown keys, values out of range, and settings that contradict each other; then
    the same checks for every row of a sweep, which trains its students with its own
    settings (a row's 'epochs=3' under 5 warmup epochs fails here, not after the teacher)."""
    settings = RunSettings.from_config(config, check_ranges=False)
    problems = settings_problems(settings)
    if problems:
        raise UserInputError("invalid config:\n  - " + "\n  - ".join(problems))
    sweeps.sweep_rows(settings, check=settings_problems)
    return settings


def settings_problems(settings: RunSettings) -> list[str]:
    """Every problem of one set of settings that needs no data: values out of range
    (declared in swin_flax/settings.py) and settings that contradict each other."""
    problems = range_problems(settings)
    stage_names = (
        ("pretrain", "finetune", "distill")
        if settings.pretrain.root
        else (
            "finetune",
            "distill",
        )
    )
    for name in stage_names:
        stage = getattr(settings, name)
        if stage.warmup_epochs >= stage.epochs:
            problems.append(
                f"{name}.warmup_epochs ({stage.warmup_epochs}) must be shorter than "
                f"{name}.epochs ({stage.epochs}): the cosine decay needs steps after it"
            )
    if settings.student.cut_points and len(settings.student.cut_points) != 2:
        problems.append(
            f"student.cut_points must be empty (derived from student.model) or two "
            f"block indices (p1, p2), got {settings.student.cut_points}"
        )
    problems += student_blocks.settings_problems(settings.student)
    if settings.data.source == "image_folder" and not settings.data.root:
        problems.append(
            "data.root is empty: data.source='image_folder' reads data.root/<split>/<class>/*.jpg"
        )
    if settings.pretrain.root and settings.teacher.finetuned:
        problems.append(
            "pretrain.root and teacher.finetuned both name a teacher: pretraining makes the "
            "teacher that is then fine-tuned; a finished teacher skips both. Set one of them"
        )
    problems += stage_lengths.epoch_problems(settings)
    d = settings.distill
    if d.joint == "weighted_harmonic" and d.w_d == 0 and d.w_s == 0:
        problems.append("distill.w_d and distill.w_s are both 0: Eq. 4 needs a positive sum")
    return problems


def check_settings(settings: RunSettings, variants: list[StudentVariant]) -> None:
    """Models, cut points, checkpoint paths, losses and batch sizes against the devices."""
    check_paths(settings)
    presets.preset(settings.teacher.model)
    presets.preset(settings.student.model)
    presets.check_image_size(
        settings.teacher.model,
        settings.data.image_size,
        model_option="teacher.model",
        size_option="data.image_size",
    )
    if student_blocks.uses_keep_blocks(settings.student):
        check_keep_blocks(settings)
    elif settings.student.cut_points:
        p1, p2 = (int(x) for x in settings.student.cut_points)
        teacher = presets.create_model(settings.teacher.model, img_size=settings.data.image_size)
        transfer.check_cut_points(teacher.config, p1, p2, settings.student.tail_init)
    elif any(v.transfer for v in variants):
        check_student_fits_teacher(settings)
    if settings.teacher.finetuned:
        check_finetuned_teacher(settings)
    check_attention(settings)
    if settings.distill.joint == "hard_only" and any(v.distill for v in variants):
        raise UserInputError(
            "distill.joint='hard_only' trains without the teacher: use a variant "
            "without '+kd' (e.g. 'transfer') or a distillation joint loss"
        )
    mesh = make_mesh()
    for name in ("finetune", "distill"):
        try:
            check_batch_size(getattr(settings, name).batch_size, mesh)
        except UserInputError as err:
            raise UserInputError(f"{name}.batch_size: {err}") from None


def check_attention(settings: RunSettings) -> None:
    """attention='cudnn' is cuDNN's fused kernel: an NVIDIA GPU and half precision only."""
    if settings.attention != "cudnn":
        return
    backend = jax.default_backend()
    if backend != "gpu":
        raise UserInputError(
            f"attention='cudnn' needs an NVIDIA GPU, this run is on {backend}; "
            "use 'einsum', 'xla' or 'pallas'"
        )
    if settings.compute_dtype == "float32":
        raise UserInputError(
            "attention='cudnn' computes in bfloat16 or float16, not compute_dtype='float32'; "
            "use compute_dtype='auto' (bf16 on a GPU) or attention='xla'"
        )


def check_paths(settings: RunSettings) -> None:
    """Fail before the (slow) data loading when a checkpoint the config names is missing."""
    teacher = settings.teacher
    if teacher.finetuned and not Path(teacher.finetuned).exists():
        raise FileNotFoundError(
            f"teacher.finetuned {teacher.finetuned!r} does not exist; give the final_model "
            "directory of a finished teacher run, or leave it empty to fine-tune one"
        )
    root = settings.pretrain.root
    for split in ("train", "test") if root else ():
        if not (Path(root) / split).is_dir():
            raise FileNotFoundError(
                f"pretrain.root {root!r} has no {split}/ folder; the source task is an image "
                f"folder: {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg"
            )
    init = teacher.init
    if root:
        return  # the teacher starts from the pretraining's file, not from teacher.init
    if init not in ("random",) and not init.startswith("timm:") and not Path(init).exists():
        raise FileNotFoundError(
            f"teacher.init {init!r} is neither 'random', 'timm:<name or .safetensors file>' nor "
            "an existing checkpoint directory (write one with convert_timm_weights.py)"
        )


def check_student_fits_teacher(settings: RunSettings) -> None:
    """student.model must be a shallower copy of teacher.model (Algorithm 1's transfer)."""
    teacher = presets.create_model(settings.teacher.model)
    student = presets.create_model(settings.student.model)
    check_shared_fields(settings, teacher, student)
    try:
        transfer.cut_points_from_depths(teacher.depths, student.depths)
    except UserInputError as err:
        raise UserInputError(
            f"student.model {settings.student.model} cannot be cut from "
            f"teacher.model {settings.teacher.model}: {err}"
        ) from None


def check_keep_blocks(settings: RunSettings) -> None:
    """student.keep_blocks against the teacher's architecture: written blocks (each known,
    no empty stage, windows of their slot's kind), or a policy for student.model's depths
    (which must share the teacher's widths); a budget is checked with the data."""
    teacher = presets.create_model(settings.teacher.model, img_size=settings.data.image_size)
    s = settings.student
    if student_blocks.policy(s) != "list" and not s.budget:
        check_shared_fields(settings, teacher, presets.create_model(s.model))
    student_blocks.check(settings, teacher.config)


def check_budgets(settings: RunSettings, num_classes: int) -> None:
    """A student.budget (of the base settings and every sweep row) that no student meets."""
    for row in sweeps.sweep_rows(settings):
        row_settings = row.settings(settings)
        if row_settings.student.budget:
            teacher = presets.create_model(
                settings.teacher.model, img_size=settings.data.image_size, num_classes=num_classes
            )
            student_blocks.target_depths(row_settings, teacher.config)


def check_shared_fields(
    settings: RunSettings, teacher: SwinTransformer, student: SwinTransformer
) -> None:
    for field in TRANSFER_SHARED_FIELDS:
        if getattr(student, field) != getattr(teacher, field):
            raise UserInputError(
                f"cannot transfer blocks from {settings.teacher.model} to "
                f"{settings.student.model}: their {field} differ ({getattr(teacher, field)} vs "
                f"{getattr(student, field)}); a transferred student must be a shallower copy "
                "of the teacher"
            )


def architecture_differences(stored: dict, expected: dict) -> list[str]:
    """'field stored vs expected' for every architecture field that differs (the class
    count and the regularisation rates are not architecture)."""
    ignored = ("num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate")
    return [
        f"{k} {stored.get(k)} vs {expected[k]}"
        for k in expected
        if k not in ignored and stored.get(k) != expected[k]
    ]


def check_finetuned_teacher(settings: RunSettings) -> None:
    """teacher.finetuned must hold the architecture teacher.model names: results are
    labelled with that name, so a different one would be reported under a false name."""
    where = settings.teacher.finetuned
    expected = model_config(
        presets.create_model(settings.teacher.model, img_size=settings.data.image_size)
    )
    differing = architecture_differences(checkpoint.load_model_config(where), expected)
    if differing:
        raise UserInputError(
            f"teacher.finetuned {where!r} holds a different architecture than teacher.model "
            f"{settings.teacher.model!r} at data.image_size {settings.data.image_size} "
            f"({'; '.join(differing)}); set teacher.model to the checkpoint's architecture"
        )


def check_workdir_writable(workdir: Path) -> None:
    """A read-only or unwritable workdir is found now, not at the first checkpoint."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise UserInputError(
            f"cannot write to the workdir {workdir} ({err.strerror or err}); "
            "give a writable directory with --workdir"
        ) from None


def check_data(
    settings: RunSettings,
    variants: list[StudentVariant],
    train_data,
    eval_data,
) -> None:
    check_batch_sizes_fit(settings, variants, len(train_data))
    for row in sweeps.sweep_rows(settings):
        if row.name:  # a sweep: each row trains its students with its own batch size
            try:
                check_batch_sizes_fit(row.settings(settings), variants, len(train_data))
            except UserInputError as err:
                raise UserInputError(f"sweep row {row.name!r}: {err}") from None
    check_budgets(settings, train_data.num_classes)
    stage_lengths.check_stage_lengths(settings, variants, len(train_data))
    check_data_fits_devices(train_data, eval_data)


def check_batch_sizes_fit(settings: RunSettings, variants, num_train: int) -> None:
    """Before the teacher trains for hours: the student's batch must fit the data too."""
    stages = [("distill", bool(variants)), ("finetune", not settings.teacher.finetuned)]
    for name, runs in stages:
        batch_size = getattr(settings, name).batch_size
        if runs and batch_size > num_train:
            raise UserInputError(
                f"{name}.batch_size {batch_size} is larger than the training "
                f"set ({num_train} examples); lower it"
            )


def check_data_fits_devices(train_data, eval_data) -> None:
    """Resident data sets must leave room for the model on every device (the rule
    data.placement=auto decides by, before decoding: `swin_flax.data.placement`)."""
    placement.check_fits_devices([train_data, eval_data])
