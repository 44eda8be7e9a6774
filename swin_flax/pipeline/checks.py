"""The checks the plan builder (plan.py) runs, all problems reported together in one
error: every mistake that can be found before anything trains is found then, not after
the teacher's hours of fine-tuning.

`config_problems` needs no data (values, models, paths, devices; the settings of every
sweep row too), `data_problems` the sizes of the data (counted before any image is
decoded). Each check returns its problems, one line each. Single values are checked
where they are declared (`swin_flax.settings`); what is here relates several settings,
or a setting to the world.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.model.config import SwinConfig
from swin_flax.pipeline import students
from swin_flax.settings import (
    DistillSettings,
    OptimSettings,
    RunSettings,
    StudentSettings,
    TeacherSettings,
    range_problems,
)
from swin_flax.training.distributed import check_batch_size, make_mesh
from swin_flax.training.losses import parse_feature_weights, uses_features
from swin_flax.weights import checkpoint, transfer
from swin_flax.weights import keep_blocks as kb

# The fields a transferred student must share with its teacher (only depths may differ).
TRANSFER_SHARED_FIELDS = ("embed_dim", "num_heads", "window_size", "patch_size", "mlp_ratio")
# How to lift loop.max_stage_steps, said wherever it is hit: `finetune.epochs=1e9` (a typo
# for 1e2?) would start 2.1e10 steps and print nothing for hours.
LIFT_ADVICE = "lower the epochs, or set loop.max_stage_steps higher (0: no limit) if you mean it"


def raise_problems(problems: list[str]) -> None:
    """One error for all of them; a sweep row's problem that the base settings have is
    said once."""
    said = set(problems)
    repeated = {p for p in said if p.startswith("sweep row ") and p.partition(": ")[2] in said}
    problems = [p for p in problems if p not in repeated]
    if problems:
        raise UserInputError("invalid config:\n  - " + "\n  - ".join(dict.fromkeys(problems)))


def parsed(problems: list[str], parse, text: str):
    """`parse(text)`, its problems added to `problems` ('invalid sweep:\n  - a' -> a)."""
    try:
        return parse(text)
    except UserInputError as err:
        problems += str(err).split("\n  - ")[1:] or [str(err)]
        return None


def counted(problems: list[str], count, *args):
    """`count(*args)` (a data size), or None with its problem added."""
    try:
        return count(*args)
    except (UserInputError, OSError, ImportError) as err:
        problems.append(str(err))
        return None


def config_problems(settings: RunSettings, rows, variants) -> list[str]:
    """Every problem that needs no data, of the settings and of each sweep row's (`rows`:
    (row, its settings)); the world (models, files, devices) once the values are sound."""
    problems = settings_problems(settings)
    for row, row_settings in rows if rows[0][0].name else ():
        problems += [f"sweep row {row.name!r}: {p}" for p in settings_problems(row_settings)]
    return problems or _world_problems(settings, rows, variants)


def settings_problems(settings: RunSettings) -> list[str]:
    """Values out of range (declared in swin_flax/settings.py) and settings that contradict
    each other."""
    problems = range_problems(settings)
    for name in (
        ("pretrain", "finetune", "distill") if settings.pretrain.root else ("finetune", "distill")
    ):
        problems += schedule_problems(name, getattr(settings, name), settings.loop.max_stage_steps)
    problems += student_problems(settings.student)
    if settings.data.source == "image_folder" and not settings.data.root:
        problems.append(
            "data.root is empty: data.source='image_folder' reads data.root/<split>/<class>/*.jpg"
        )
    if settings.pretrain.root and settings.teacher.finetuned:
        problems.append(
            "pretrain.root and teacher.finetuned both name a teacher: pretraining makes the "
            "teacher that is then fine-tuned; a finished teacher skips both. Set one of them"
        )
    if (
        settings.distill.joint == "weighted_harmonic"
        and settings.distill.w_d == 0
        and settings.distill.w_s == 0
    ):
        problems.append("distill.w_d and distill.w_s are both 0: Eq. 4 needs a positive sum")
    return problems


def _in_row(row, problems: list[str]) -> list[str]:
    return [f"sweep row {row.name!r}: {p}" if row.name else p for p in problems]


def _world_problems(settings: RunSettings, rows, variants) -> list[str]:
    """Models, cut points, paths, losses and batch sizes against the devices."""
    t = settings.teacher
    problems = path_problems(t, settings.pretrain.root)
    for name in dict.fromkeys([t.model, *(s.student.model for _, s in rows)]):
        problems += problems_of(presets.preset_config, name)
    if problems:
        return problems
    # The size the user sets is named (data.image_size), not the model's img_size.
    problems += problems_of(
        lambda: presets.check_image_size(
            t.model,
            settings.data.image_size,
            model_option="teacher.model",
            size_option="data.image_size",
        )
    )
    if problems:
        return problems
    if t.finetuned:
        problems += finetuned_teacher_problems(t, settings.data.image_size)
    problems += attention_problems(settings.attention, settings.compute_dtype)
    teacher = students.teacher_architecture(t, settings.data.image_size)
    transfers = any(v.transfer or v.exits for v in variants)
    for row, s in rows:
        found = student_model_problems(t.model, s.student, teacher, transfers)
        if s.distill.joint == "hard_only" and any(v.distill for v in variants):
            found.append(
                "distill.joint='hard_only' trains without the teacher: use a variant "
                "without '+kd' (e.g. 'transfer') or a distillation joint loss"
            )
        if any(v.distill for v in variants):
            found += feature_problems(s.distill, len(teacher.depths))
        if any(v.exits for v in variants) and students.needs_importance(s.student):
            found.append(
                "runs=exits takes its exit's blocks before anything trains; "
                "student.keep_blocks=importance chooses them after the teacher's fine-tuning: "
                "write the blocks (e.g. '0,1;0,1;0,1;0,1') or choose another policy"
            )
        batches = {"finetune": s.finetune.batch_size, "distill": s.distill.batch_size}
        problems += _in_row(row, found + device_batch_problems(batches))
    return problems


def feature_problems(distill: DistillSettings, num_stages: int) -> list[str]:
    """distill.feature_weights: one finite weight >= 0 per teacher stage, the teacher live."""
    text = distill.feature_weights
    try:
        weights = parse_feature_weights(text)
    except ValueError:
        return [f"distill.feature_weights={text!r} must be numbers, e.g. '0,0,1,1'"]
    if not weights:
        return []
    if len(weights) != num_stages or not all(math.isfinite(w) and w >= 0 for w in weights):
        return [
            f"distill.feature_weights={text!r} must be {num_stages} finite weights >= 0, one "
            f"per stage of the teacher, e.g. '{','.join(['0'] * (num_stages - 2) + ['1', '1'])}'"
        ]
    if uses_features(weights) and distill.teacher_logits in ("record", "cached"):
        return [
            f"distill.feature_weights needs the teacher live: stage outputs are not recorded "
            f"(distill.teacher_logits={distill.teacher_logits!r}; set 'live' or 'auto')"
        ]
    return []


def data_problems(settings: RunSettings, rows, variants, data, source) -> list[str]:
    """The batch sizes against the data, the budgets, the class count of a given teacher."""
    t, problems = settings.teacher, []
    teacher = students.teacher_architecture(t, settings.data.image_size)
    if t.finetuned and teacher.num_classes != data.num_classes:
        problems.append(
            f"the teacher in {t.finetuned} has {teacher.num_classes} classes but the data set "
            f"has {data.num_classes}"
        )
    if source is not None and source.train is not None:
        problems += batch_fit_problems({"pretrain": settings.pretrain.batch_size}, source.train)
    teacher = teacher.replace(num_classes=data.num_classes)
    for row, s in rows:
        batches = {"distill": s.distill.batch_size} if variants else {}
        if not t.finetuned:
            batches["finetune"] = s.finetune.batch_size
        found = batch_fit_problems(batches, data.train) if data.train is not None else []
        if s.student.budget:
            timing = (s.eval.throughput_batch_size, s.eval.throughput_repeats, s.compute_dtype)
            found += problems_of(students.target_depths, s.student, teacher, timing)
        problems += _in_row(row, found)
    return problems


def length_problems(lengths, max_steps: int) -> list[str]:
    """The longest stage over loop.max_stage_steps, now that the data gives step counts."""
    too_long = [length for length in lengths if max_steps and length.steps > max_steps]
    if not too_long:
        return []
    worst = max(too_long, key=lambda length: length.steps)
    return [
        f"{worst.key}.epochs {worst.epochs:g} makes {worst.describe()}, more than "
        f"loop.max_stage_steps {max_steps:,}; {LIFT_ADVICE}"
    ]


def problems_of(check, *args) -> list[str]:
    """The problems a raising check finds, one line each ('head:\n  - a' -> 'head: a')."""
    try:
        check(*args)
    except (UserInputError, FileNotFoundError) as err:
        head, *items = str(err).split("\n  - ")
        return [f"{head} {item}" for item in items] or [head]
    return []


def schedule_problems(name: str, optim_settings: OptimSettings, max_steps: int) -> list[str]:
    """A stage section's schedule: a warmup shorter than the stage, and (before the data's
    size gives the step count) epochs alone over loop.max_stage_steps."""
    problems = []
    if optim_settings.warmup_epochs >= optim_settings.epochs:
        problems.append(
            f"{name}.warmup_epochs ({optim_settings.warmup_epochs}) must be shorter than "
            f"{name}.epochs ({optim_settings.epochs}): the cosine decay needs steps after it"
        )
    if max_steps and optim_settings.epochs > max_steps:  # every epoch is at least one step
        problems.append(
            f"{name}.epochs {optim_settings.epochs:g} gives at least "
            f"{optim_settings.epochs:,.0f} steps, more than loop.max_stage_steps {max_steps:,}; "
            f"{LIFT_ADVICE}"
        )
    return problems


def student_problems(student_settings: StudentSettings) -> list[str]:
    """Student settings that contradict each other (no teacher needed)."""
    problems = []
    if student_settings.cut_points and len(student_settings.cut_points) != 2:
        problems.append(
            f"student.cut_points must be empty (derived from student.model) or two "
            f"block indices (p1, p2), got {student_settings.cut_points}"
        )
    if not students.uses_keep_blocks(student_settings):
        return problems
    if student_settings.cut_points:
        problems.append(
            "student.cut_points and student.keep_blocks / student.budget both choose the "
            "blocks to keep: set one"
        )
    name = students.policy(student_settings)
    if name == "list" and student_settings.budget:
        problems.append(
            f"student.budget picks the depths, student.keep_blocks={student_settings.keep_blocks!r} names "
            "the blocks: set one, or give keep_blocks a policy (e.g. first, even)"
        )
    if name == "first" and student_settings.tail_init == "teacher":
        problems.append(
            "student.keep_blocks=first is the paper's random tail (a budget without keep_blocks "
            "means first); for copied blocks use keep_blocks=first+teacher_tail "
            "(tail_init='teacher' then also copies the head)"
        )
    if name == "list":
        problems += problems_of(kb.parse_blocks, student_settings.keep_blocks)
    return problems


def path_problems(teacher_settings: TeacherSettings, pretrain_root: str) -> list[str]:
    """Checkpoints and folders the config names that are missing (before any data loads)."""
    problems = []
    if teacher_settings.finetuned and not Path(teacher_settings.finetuned).exists():
        problems.append(
            f"teacher.finetuned {teacher_settings.finetuned!r} does not exist; give the final_model "
            "directory of a finished teacher run, or leave it empty to fine-tune one"
        )
    for split in ("train", "test") if pretrain_root else ():
        if not (Path(pretrain_root) / split).is_dir():
            problems.append(
                f"pretrain.root {pretrain_root!r} has no {split}/ folder; the source task is an "
                f"image folder: {pretrain_root}/train/<class>/*.jpg and "
                f"{pretrain_root}/test/<class>/*.jpg"
            )
    init = teacher_settings.init
    if pretrain_root or init == "random" or init.startswith("timm:") or Path(init).exists():
        return problems  # with pretraining the teacher starts from the pretraining's file
    return problems + [
        f"teacher.init {init!r} is neither 'random', 'timm:<name or .safetensors file>' nor "
        "an existing checkpoint directory (write one with convert_timm_weights.py)"
    ]


def student_model_problems(
    teacher_model: str, student_settings: StudentSettings, teacher: SwinConfig, transfers: bool
) -> list[str]:
    """student.model (a known preset), its cut points or kept blocks against the teacher's
    architecture; `transfers`: whether a variant copies the teacher's blocks."""
    if students.uses_keep_blocks(student_settings):
        if students.policy(student_settings) == "list":
            blocks = kb.parse_blocks(student_settings.keep_blocks)
            return problems_of(kb.check_blocks, blocks, teacher.depths, kb.shifted_stages(teacher))
        if student_settings.budget:  # the depths are picked once the data's class count is known
            return []
        problems = shared_field_problems(teacher_model, student_settings.model, teacher)
        try:
            kb.check_depths(presets.preset_config(student_settings.model).depths, teacher.depths)
        except UserInputError as err:
            problems.append(f"student.model {student_settings.model}: {err}")
        return problems[:1]
    if student_settings.cut_points:
        p1, p2 = (int(x) for x in student_settings.cut_points)
        return problems_of(transfer.check_cut_points, teacher, p1, p2, student_settings.tail_init)
    if not transfers:
        return []
    problems = shared_field_problems(teacher_model, student_settings.model, teacher)
    if problems:
        return problems
    try:
        transfer.cut_points_from_depths(
            teacher.depths, presets.preset_config(student_settings.model).depths
        )
    except UserInputError as err:
        return [
            f"student.model {student_settings.model} cannot be cut from teacher.model {teacher_model}: {err}"
        ]
    return []


def shared_field_problems(teacher_model: str, student_model: str, teacher: SwinConfig):
    """A transferred student must be a shallower copy of the teacher."""
    student = presets.preset_config(student_model)
    for field in TRANSFER_SHARED_FIELDS:
        if getattr(student, field) != getattr(teacher, field):
            return [
                f"cannot transfer blocks from {teacher_model} to {student_model}: their {field} "
                f"differ ({getattr(teacher, field)} vs {getattr(student, field)}); a transferred "
                "student must be a shallower copy of the teacher"
            ]
    return []


def finetuned_teacher_problems(teacher_settings: TeacherSettings, image_size: int) -> list[str]:
    """teacher.finetuned must hold the architecture teacher.model names: results are
    labelled with that name, so a different one would be reported under a false name."""
    where = teacher_settings.finetuned
    expected = presets.preset_config(teacher_settings.model).replace(img_size=image_size).to_dict()
    differing = students.architecture_differences(checkpoint.load_model_config(where), expected)
    if not differing:
        return []
    return [
        f"teacher.finetuned {where!r} holds a different architecture than teacher.model "
        f"{teacher_settings.model!r} at data.image_size {image_size} ({'; '.join(differing)}); set "
        "teacher.model to the checkpoint's architecture"
    ]


def attention_problems(attention: str, compute_dtype: str) -> list[str]:
    """attention='cudnn' is cuDNN's fused kernel: an NVIDIA GPU and half precision only."""
    if attention != "cudnn":
        return []
    backend = jax.default_backend()
    if backend != "gpu":
        return [
            f"attention='cudnn' needs an NVIDIA GPU, this run is on {backend}; "
            "use 'einsum', 'xla' or 'pallas'"
        ]
    if compute_dtype == "float32":
        return [
            "attention='cudnn' computes in bfloat16 or float16, not compute_dtype='float32'; "
            "use compute_dtype='auto' (bf16 on a GPU) or attention='xla'"
        ]
    return []


def device_batch_problems(batch_sizes: dict[str, int]) -> list[str]:
    """Each stage's global batch against the devices it is split over."""
    mesh = make_mesh()
    return [
        f"{name}.batch_size: {problem}"
        for name, size in batch_sizes.items()
        for problem in problems_of(check_batch_size, size, mesh)
    ]


def batch_fit_problems(batch_sizes: dict[str, int], num_train: int) -> list[str]:
    """Before the teacher trains for hours: every stage's batch must fit the data."""
    return [
        f"{name}.batch_size {size} is larger than the training set ({num_train} examples); lower it"
        for name, size in batch_sizes.items()
        if size > num_train
    ]
