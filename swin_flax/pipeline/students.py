"""A stage's starting parameters, and which teacher blocks a student keeps.

`initial_teacher_params`: the teacher's ('random', a checkpoint directory, or
'timm:<name or .safetensors file>', a new head for the task). `student_params`: a
student's, from its `StageSpec`: random, then what it takes from the teacher copied in
(Algorithm 1's cut points, or the blocks it keeps).

Which blocks, from `student.keep_blocks` and `.budget`:
    keep_blocks ''                 off: student.model's depths, or student.cut_points (paper)
    keep_blocks '0,1;0,1;4,5;0,1'  these teacher blocks, per stage (student.model unused)
    keep_blocks POLICY             first, first+teacher_tail, even, importance or auto, for
                                   the depths of student.model, or those student.budget picks
    budget 'params:5M'             the depths (budget.py); student.model is unused, and
                                   keep_blocks '' means the paper's policy, first
The blocks and policies are defined in swin_flax/weights/keep_blocks.py. `auto` is the
policy this project recommends from its measurements (results/blocks.md), AUTO_POLICY: the
only place a measured policy other than the paper's may become a default. `importance`
reads the teacher's block importance, measured after its fine-tuning (block_importance.py).
With keep_blocks, student.tail_init='teacher' also copies the teacher's head (a
keep-every-block student is then the teacher, bit for bit). A sweep compares policies
against one teacher: `--config.sweep=student.keep_blocks=first,first+teacher_tail,even,
importance` (written lists hold ',' and ';', which a sweep row cannot).
"""

from __future__ import annotations

from pathlib import Path

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.model.config import SwinConfig
from swin_flax.model.swin import SwinTransformer, init_params, model_config
from swin_flax.pipeline import budget as budgets
from swin_flax.settings import KEEP_POLICIES, StudentSettings, TeacherSettings
from swin_flax.weights import checkpoint, transfer
from swin_flax.weights import keep_blocks as kb
from swin_flax.weights.importer import note_fresh_head, timm_classes

# The paper's policy until results/blocks.md shows another beating it beyond the spread.
AUTO_POLICY = "first"


def initial_teacher_params(init: str, model: SwinTransformer, *, seed: int):
    """'random', a `load_checkpoint` directory, or 'timm:<name or .safetensors path>'."""
    if init == "random":
        return init_params(model, seed)
    if init.startswith("timm:"):
        from swin_flax.weights.sources import load_state_dict
        from swin_flax.weights.timm import timm_to_flax

        state_dict = load_state_dict(init[len("timm:") :])
        note_fresh_head(f"teacher.init {init}", timm_classes(state_dict), model.num_classes)
        return timm_to_flax(state_dict, model, head="reinit", rng=seed)
    source, params = checkpoint.load_checkpoint(Path(init))
    differing = architecture_differences(model_config(source), model_config(model))
    if differing:
        raise UserInputError(
            f"teacher.init {init!r} holds a different architecture than teacher.model "
            f"({model.config.describe()}): " + ", ".join(differing)
        )
    if source.num_classes == model.num_classes:
        return params
    # A new task: keep every pretrained weight but the classifier, which starts fresh.
    note_fresh_head(f"teacher.init {init}", source.num_classes, model.num_classes)
    return {**params, "head": init_params(model, seed)["head"]}


def teacher_architecture(
    teacher_settings: TeacherSettings, image_size: int, num_classes: int | None = None
) -> SwinConfig:
    """The teacher's: teacher.finetuned's stored architecture, or teacher.model's preset at
    data.image_size with teacher.drop_path_rate; `num_classes`: the data's."""
    if teacher_settings.finetuned:
        config = SwinConfig.from_dict(checkpoint.load_model_config(teacher_settings.finetuned))
    else:
        config = presets.preset_config(teacher_settings.model).replace(
            img_size=image_size, drop_path_rate=teacher_settings.drop_path_rate
        )
    return config if num_classes is None else config.replace(num_classes=num_classes)


def architecture_differences(stored: dict, expected: dict) -> list[str]:
    """'field stored vs expected' for every architecture field that differs (the class
    count and the regularisation rates are not architecture)."""
    ignored = ("num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate")
    return [
        f"{k} {stored.get(k)} vs {expected[k]}"
        for k in expected
        if k not in ignored and stored.get(k) != expected[k]
    ]


def student_params(spec, model: SwinTransformer, teacher, teacher_params, importance=None):
    """A student stage's initial parameters (`spec`: its StageSpec): random (seed + 1, so
    that no student starts as its teacher's random init), then, when it transfers, the
    teacher's blocks of `spec.blocks` (`importance`: the teacher's measured
    BlockImportance, for the importance policy)."""
    params = init_params(model, spec.seed + 1)
    blocks = spec.blocks
    if blocks is None:
        return params
    if blocks.cut_points is not None:
        p1, p2 = blocks.cut_points
        return transfer.transfer_params(
            teacher_params,
            params,
            teacher_depths=tuple(teacher.depths),
            p1=p1,
            p2=p2,
            tail_init=blocks.tail_init,
        )
    kept = blocks.kept
    if kept is None:  # the importance policy: chosen now that the costs are measured
        costs = importance.costs() if importance is not None else None
        kept = kept_blocks(blocks.policy, teacher.config, model.depths, blocks.tail_init, costs)
    return kb.transfer_kept(teacher_params, params, kept)


# --------------------------------------------------------- which blocks (keep_blocks, budget)


def uses_keep_blocks(student_settings: StudentSettings) -> bool:
    return bool(student_settings.keep_blocks or student_settings.budget)


def policy(student_settings: StudentSettings) -> str:
    """The policy that chooses the blocks ('auto' resolved), or 'list' for written blocks."""
    written = student_settings.keep_blocks or "first"
    if written == "auto":
        return AUTO_POLICY
    return written if written in KEEP_POLICIES else "list"


def needs_importance(student_settings: StudentSettings) -> bool:
    return uses_keep_blocks(student_settings) and policy(student_settings) == "importance"


def target_depths(
    student_settings: StudentSettings, teacher: SwinConfig, timing
) -> tuple[int, ...]:
    """The student's depths: the written lists', the budget's pick, or student.model's.
    `timing`: (batch size, repeats, compute dtype name) of a latency budget's measurements."""
    if policy(student_settings) == "list":
        return tuple(len(stage) for stage in kb.parse_blocks(student_settings.keep_blocks))
    if student_settings.budget:
        batch_size, repeats, compute_dtype = timing
        return budgets.pick_depths(
            budgets.parse_budget(student_settings.budget),
            teacher,
            batch_size=batch_size,
            repeats=repeats,
            dtype=budgets.measurement_dtype(compute_dtype),
        )
    return presets.preset_config(student_settings.model).depths


def kept_blocks(
    keep: str, teacher: SwinConfig, depths, tail_init: str, costs=None
) -> kb.KeptBlocks:
    """The blocks a transferred student keeps and what it copies. `keep`: a policy
    (`policy()`) or a written list; `costs`: the measured block importance
    (`BlockImportance.costs()`), needed by the importance policy only."""
    shifted, copy_head = kb.shifted_stages(teacher), tail_init == "teacher"
    if keep not in KEEP_POLICIES:
        blocks = kb.parse_blocks(keep)
        kb.check_blocks(blocks, teacher.depths, shifted)
        return kb.KeptBlocks(blocks, "list", copy_head=copy_head)
    if keep == "even":
        blocks = kb.even_blocks(teacher.depths, depths, shifted)
    elif keep == "importance":
        if costs is None:
            raise UserInputError(
                "student.keep_blocks=importance needs the teacher's block importance, measured "
                "after its fine-tuning in the pipeline (or python -m "
                "swin_flax.pipeline.block_importance)"
            )
        blocks = kb.important_blocks(teacher.depths, depths, shifted, costs)
    else:
        blocks = kb.first_blocks(teacher.depths, depths)
    kb.check_blocks(blocks, teacher.depths, shifted)  # what every policy guarantees
    return kb.KeptBlocks(blocks, keep, copy_tail=keep != "first", copy_head=copy_head)


def label(student_settings: StudentSettings, teacher_model: str, depths) -> str:
    """The results' name of a keep-blocks student (its policy in it: rows stay apart)."""
    if policy(student_settings) == "list":
        blocks = kb.format_blocks(kb.parse_blocks(student_settings.keep_blocks))
        return f"{teacher_model} keeping blocks {blocks}"
    written = student_settings.keep_blocks or "first"
    how = f"keep_blocks={written}" + (f" = {policy(student_settings)}" if written == "auto" else "")
    if student_settings.budget:
        return f"{teacher_model} at depths {list(depths)} ({how}, budget {student_settings.budget})"
    return f"{student_settings.model} ({how})"
