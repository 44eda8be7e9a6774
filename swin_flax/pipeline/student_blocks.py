"""Which teacher blocks a student keeps, from its settings: `student.keep_blocks`, `.budget`.

    keep_blocks ''                 off: student.model's depths, or student.cut_points (paper)
    keep_blocks '0,1;0,1;4,5;0,1'  these teacher blocks, per stage (student.model unused)
    keep_blocks POLICY             first, first+teacher_tail, even, importance or auto, for
                                   the depths of student.model, or those student.budget picks
    budget 'params:5M'             the depths (swin_flax/pipeline/budget.py); student.model is
                                   unused, and keep_blocks '' means the paper's policy, first

The blocks and policies are defined in swin_flax/weights/keep_blocks.py. `auto` is the
policy this project recommends from its measurements (results/blocks.md), AUTO_POLICY: the
only place a measured policy other than the paper's may become a default. `importance`
reads the teacher's block importance, measured after its fine-tuning
(swin_flax/pipeline/blocks.py). With keep_blocks, student.tail_init='teacher' also copies
the teacher's head (a keep-every-block student is then the teacher, bit for bit). A sweep
compares policies in one work directory, against one teacher:
`--config.sweep=student.keep_blocks=first,first+teacher_tail,even,importance` (written lists
hold ',' and ';', which a sweep row cannot).
"""

from __future__ import annotations

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.model.config import SwinConfig
from swin_flax.pipeline import budget as budgets
from swin_flax.settings import KEEP_POLICIES, RunSettings, StudentSettings
from swin_flax.weights import keep_blocks as kb

# The paper's policy until results/blocks.md shows another beating it beyond the spread.
AUTO_POLICY = "first"


def uses_keep_blocks(student: StudentSettings) -> bool:
    return bool(student.keep_blocks or student.budget)


def policy(student: StudentSettings) -> str:
    """The policy that chooses the blocks ('auto' resolved), or 'list' for written blocks."""
    written = student.keep_blocks or "first"
    if written == "auto":
        return AUTO_POLICY
    return written if written in KEEP_POLICIES else "list"


def needs_importance(settings: RunSettings) -> bool:
    return uses_keep_blocks(settings.student) and policy(settings.student) == "importance"


def settings_problems(student: StudentSettings) -> list[str]:
    """The student settings that contradict each other (no teacher needed)."""
    if not uses_keep_blocks(student):
        return []
    problems = []
    if student.cut_points:
        problems.append(
            "student.cut_points and student.keep_blocks / student.budget both choose the "
            "blocks to keep: set one"
        )
    name = policy(student)
    if name == "list" and student.budget:
        problems.append(
            f"student.budget picks the depths, student.keep_blocks={student.keep_blocks!r} names "
            "the blocks: set one, or give keep_blocks a policy (e.g. first, even)"
        )
    if name == "first" and student.tail_init == "teacher":
        problems.append(
            "student.keep_blocks=first is the paper's random tail (a budget without keep_blocks "
            "means first); for copied blocks use keep_blocks=first+teacher_tail "
            "(tail_init='teacher' then also copies the head)"
        )
    if name == "list":
        try:
            kb.parse_blocks(student.keep_blocks)
        except UserInputError as err:
            problems.append(str(err))
    return problems


def target_depths(settings: RunSettings, teacher: SwinConfig) -> tuple[int, ...]:
    """The student's depths: the written lists', the budget's pick, or student.model's."""
    s = settings.student
    if policy(s) == "list":
        return tuple(len(stage) for stage in kb.parse_blocks(s.keep_blocks))
    if s.budget:
        return budgets.pick_depths(
            budgets.parse_budget(s.budget),
            teacher,
            batch_size=settings.eval.throughput_batch_size,
            repeats=settings.eval.throughput_repeats,
            dtype=budgets.measurement_dtype(settings.compute_dtype),
        )
    return presets.preset_config(s.model).depths


def kept_blocks(settings: RunSettings, teacher: SwinConfig, costs=None) -> kb.KeptBlocks:
    """The blocks a transferred student keeps and what it copies. `costs`: the measured
    block importance (`BlockImportance.costs()`), needed by the importance policy only."""
    s = settings.student
    name, shifted = policy(s), kb.shifted_stages(teacher)
    copy_head = s.tail_init == "teacher"
    if name == "list":
        blocks = kb.parse_blocks(s.keep_blocks)
        kb.check_blocks(blocks, teacher.depths, shifted)
        return kb.KeptBlocks(blocks, "list", copy_head=copy_head)
    depths = target_depths(settings, teacher)
    if name == "even":
        blocks = kb.even_blocks(teacher.depths, depths, shifted)
    elif name == "importance":
        if costs is None:
            raise UserInputError(
                "student.keep_blocks=importance needs the teacher's block importance, measured "
                "after its fine-tuning in the pipeline (or python -m swin_flax.pipeline.blocks)"
            )
        blocks = kb.important_blocks(teacher.depths, depths, shifted, costs)
    else:
        blocks = kb.first_blocks(teacher.depths, depths)
    kb.check_blocks(blocks, teacher.depths, shifted)  # what every policy guarantees
    return kb.KeptBlocks(blocks, name, copy_tail=name != "first", copy_head=copy_head)


def check(settings: RunSettings, teacher: SwinConfig) -> None:
    """Before any data loads: written blocks against the teacher, a policy's depths."""
    s = settings.student
    if policy(s) == "list":
        kb.check_blocks(kb.parse_blocks(s.keep_blocks), teacher.depths, kb.shifted_stages(teacher))
    elif not s.budget:
        try:
            kb.check_depths(presets.preset_config(s.model).depths, teacher.depths)
        except UserInputError as err:
            raise UserInputError(f"student.model {s.model}: {err}") from None


def label(settings: RunSettings, depths) -> str:
    """The results' name of a keep-blocks student (its policy in it: rows stay apart)."""
    s = settings.student
    if policy(s) == "list":
        blocks = kb.format_blocks(kb.parse_blocks(s.keep_blocks))
        return f"{settings.teacher.model} keeping blocks {blocks}"
    written = s.keep_blocks or "first"
    how = f"keep_blocks={written}" + (f" = {policy(s)}" if written == "auto" else "")
    if s.budget:
        return f"{settings.teacher.model} at depths {list(depths)} ({how}, budget {s.budget})"
    return f"{s.model} ({how})"
