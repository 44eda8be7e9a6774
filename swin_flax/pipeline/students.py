"""The teacher's initial weights and the student architectures of Algorithm 1."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.model.swin import SwinTransformer, init_params, model_config
from swin_flax.pipeline import preflight, student_blocks
from swin_flax.pipeline.variants import StudentVariant
from swin_flax.settings import RunSettings
from swin_flax.weights import checkpoint, keep_blocks, transfer


def initial_teacher_params(init: str, model: SwinTransformer, *, seed: int):
    """'random', a `load_checkpoint` directory, or 'timm:<name or .safetensors path>'."""
    if init == "random":
        return init_params(model, seed)
    if init.startswith("timm:"):
        from swin_flax.weights.sources import load_state_dict
        from swin_flax.weights.timm import timm_to_flax

        state_dict = load_state_dict(init[len("timm:") :])
        return timm_to_flax(state_dict, model, head="reinit", rng=seed)
    source, params = checkpoint.load_checkpoint(Path(init))
    differing = preflight.architecture_differences(model_config(source), model_config(model))
    if differing:
        raise UserInputError(
            f"teacher.init {init!r} holds a different architecture than teacher.model "
            f"({model.config.describe()}): " + ", ".join(differing)
        )
    if source.num_classes == model.num_classes:
        return params
    # A new task: keep every pretrained weight but the classifier, which starts fresh.
    return {**params, "head": init_params(model, seed)["head"]}


def strong_scratch_settings(settings: RunSettings, train_size: int, teacher_steps: int):
    """The student recipe stretched to the teacher's budget (random+long): as many steps as
    the teacher had (pretraining and fine-tuning), at the students' batch size on this
    training set; the warmup is unchanged."""
    distill = settings.distill
    epochs = max(distill.epochs, teacher_steps / (train_size // distill.batch_size))
    return dataclasses.replace(settings, distill=dataclasses.replace(distill, epochs=epochs))


def init_label(init: str) -> str:
    return "random" if init == "random" else "pretrained"


def check_num_classes(model: SwinTransformer, num_classes: int, where) -> None:
    if model.num_classes != num_classes:
        raise UserInputError(
            f"the teacher in {where} has {model.num_classes} classes but the data "
            f"set has {num_classes}"
        )


def build_student(
    settings: RunSettings,
    teacher: SwinTransformer | None,
    variant: StudentVariant,
    dtype,
    num_classes: int,
    importance=None,
) -> tuple[SwinTransformer, tuple[int, int] | keep_blocks.KeptBlocks | None]:
    """The student architecture (computing attention as settings.attention says) and, when
    transferring, what it takes from the teacher: Algorithm 1's cut points, or with
    student.keep_blocks / budget the kept blocks (`importance`: the teacher's measured
    `BlockImportance`, which keep_blocks=importance needs)."""
    s = settings.student
    if teacher is None:  # a baseline from scratch: only the teacher's architecture matters
        teacher = presets.create_model(
            settings.teacher.model,
            num_classes=num_classes,
            img_size=settings.data.image_size,
            dtype=dtype,
        )
    run_options = {"dtype": dtype, "attention": settings.attention}
    if student_blocks.uses_keep_blocks(s):
        kept = None
        if variant.transfer:
            costs = importance.costs() if importance is not None else None
            kept = student_blocks.kept_blocks(settings, teacher.config, costs)
        depths = kept.depths if kept else student_blocks.target_depths(settings, teacher.config)
        config = teacher.config.replace(
            depths=depths, num_classes=num_classes, drop_path_rate=s.drop_path_rate
        )
        student = teacher.clone(config=config, **run_options)
        return student, kept
    if s.cut_points:
        p1, p2 = (int(x) for x in s.cut_points)
        depths = transfer.student_depths_from_cuts(tuple(teacher.depths), p1, p2)
        config = teacher.config.replace(
            depths=depths, num_classes=num_classes, drop_path_rate=s.drop_path_rate
        )
        student = teacher.clone(config=config, **run_options)
        return student, (p1, p2)
    student = presets.create_model(
        s.model,
        num_classes=num_classes,
        img_size=teacher.img_size,
        drop_path_rate=s.drop_path_rate,
        **run_options,
    )
    if not variant.transfer:
        return student, None
    preflight.check_shared_fields(settings, teacher, student)
    return student, transfer.cut_points_from_depths(tuple(teacher.depths), tuple(student.depths))


def student_label(settings: RunSettings, student: SwinTransformer) -> str:
    """The configured student's name, or the depths when explicit cut points changed them;
    a keep-blocks student's name gives its blocks or its policy."""
    if student_blocks.uses_keep_blocks(settings.student):
        return student_blocks.label(settings, student.config.depths)
    named = presets.preset_config(settings.student.model)
    if named.depths == student.config.depths and named.embed_dim == student.embed_dim:
        return settings.student.model
    return f"{settings.teacher.model} cut to depths {list(student.depths)}"


def transferred_params(teacher: SwinTransformer, teacher_params, student_params, taken, tail_init):
    """The student's initial parameters with what it takes from the teacher (`taken`, as
    `build_student` returned it): Algorithm 1's cut points, or the kept blocks."""
    if isinstance(taken, keep_blocks.KeptBlocks):
        return keep_blocks.transfer_kept(teacher_params, student_params, taken)
    p1, p2 = taken
    return transfer.transfer_params(
        teacher_params,
        student_params,
        teacher_depths=tuple(teacher.depths),
        p1=p1,
        p2=p2,
        tail_init=tail_init,
    )
