"""Algorithm 1's student construction: S = CreateNetworkLike(Compose(T[:p1], T[p2:])) and
S[:p1] = CopyWeights(T[:p1]).

Cut points are global block indices: block b of a model with `depths` is block j of stage s with
b = sum(depths[:s]) + j. The student keeps the teacher's blocks [0, p1) and [p2, total); every
stage keeps at least one block, so the student has the same stages, widths and resolutions and
differs only in depths. The paper's students from Swin-T (2, 2, 6, 2): Swin-N = p1 6, p2 10 ->
(2, 2, 2, 2); Swin-M = p1 8, p2 10 -> (2, 2, 4, 2).

As a sequence the teacher is patch_embed, then per stage [downsample (stages > 0), blocks...],
then norm and head. The prefix T[:p1] is the patch embedding, blocks [0, p1) and the downsample
of every stage whose first block is < p1. The rest (the paper's G-hat: later blocks, later
downsampling, final norm, head) keeps the student's random init (`tail_init='random'`, the
paper) or comes from the teacher's [p2, total) part (`tail_init='teacher'`).

Parameter trees are the Flax 'params' collection of `swin_flax.model.swin.SwinTransformer`: plain
nested dicts, copied module by module through `flax.traverse_util` (no model is built here). `copy_modules`
executes any {student module: teacher module} plan; students made of any teacher blocks
(`student.keep_blocks`) build theirs in swin_flax/weights/keep_blocks.py.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from swin_flax.errors import UserInputError
from swin_flax.model.config import SwinConfig, window_and_shift
from swin_flax.settings import TAIL_INITS  # declared with student.tail_init's check

# ----------------------------------------------------------------------------- cut points


def _check_depths(depths: Sequence[int], what: str) -> tuple[int, ...]:
    depths = tuple(depths)
    if not depths or any(
        isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in depths
    ):
        raise UserInputError(
            f"{what} depths must be a non-empty sequence of ints >= 1, got {depths}"
        )
    return tuple(int(d) for d in depths)


def _stage_starts(depths: tuple[int, ...]) -> tuple[int, ...]:
    """Global index of each stage's first block, plus the total as a final sentinel."""
    return tuple(int(x) for x in np.concatenate([[0], np.cumsum(depths)]))


def validate_cut_points(teacher_depths: Sequence[int], p1: int, p2: int) -> None:
    """Raise a ValueError explaining why (p1, p2) cannot cut a teacher with these depths.

    Valid: integers with 0 <= p1 <= p2 <= total blocks such that every stage keeps a block (the
    student must keep the teacher's stages, or its widths and downsampling would not line up).
    p1 == p2 removes nothing: the student has the teacher's depths.
    """
    depths = _check_depths(teacher_depths, "teacher")
    total = sum(depths)
    for name, p in (("p1", p1), ("p2", p2)):
        if isinstance(p, bool) or not isinstance(p, numbers.Integral):
            raise UserInputError(f"cut point {name} must be an int block index, got {p!r}")
        if not 0 <= p <= total:
            raise UserInputError(
                f"cut point {name}={p} is out of range: the teacher {depths} has "
                f"blocks 0..{total - 1}, so cut points lie in [0, {total}]"
            )
    if p1 > p2:
        raise UserInputError(
            f"cut points need p1 <= p2 (the student keeps blocks [0, p1) and "
            f"[p2, {total})), got p1={p1}, p2={p2}"
        )
    starts = _stage_starts(depths)
    for s in range(len(depths)):
        first, end = starts[s], starts[s + 1]
        if first >= p1 and end <= p2:
            raise UserInputError(
                f"cut points p1={p1}, p2={p2} remove every block of stage {s} (teacher blocks "
                f"[{first}, {end})); each stage must keep at least one block"
            )


def student_depths_from_cuts(teacher_depths: Sequence[int], p1: int, p2: int) -> tuple[int, ...]:
    """Depths of Compose(T[:p1], T[p2:]): each stage keeps its blocks outside [p1, p2)."""
    validate_cut_points(teacher_depths, p1, p2)
    depths = _check_depths(teacher_depths, "teacher")
    starts = _stage_starts(depths)
    removed = [max(0, min(starts[s + 1], p2) - max(starts[s], p1)) for s in range(len(depths))]
    return tuple(d - r for d, r in zip(depths, removed))


def cut_points_from_depths(
    teacher_depths: Sequence[int], student_depths: Sequence[int]
) -> tuple[int, int]:
    """The (p1, p2) that turns the teacher into a student of these depths, when unambiguous.

    Derivable when the student differs from the teacher in one stage only and is shallower
    there: that stage keeps its first blocks and the cut removes its last ones, as the paper
    does (Swin-N from Swin-T: (6, 10); Swin-M: (8, 10)). Equal depths give (total, total): no
    compression, every block is in the prefix. Anything else needs explicit cut points.
    """
    teacher = _check_depths(teacher_depths, "teacher")
    student = _check_depths(student_depths, "student")
    total = sum(teacher)
    if len(student) != len(teacher):
        raise UserInputError(
            f"student depths {student} and teacher depths {teacher} have different numbers "
            "of stages; a student must keep every teacher stage"
        )
    deeper = [s for s in range(len(teacher)) if student[s] > teacher[s]]
    if deeper:
        s = deeper[0]
        raise UserInputError(
            f"the student (depths {student}) is deeper than its teacher (depths {teacher}): "
            f"stage {s} has {student[s]} blocks, the teacher's {teacher[s]}. A student keeps "
            "some of its teacher's blocks, so it can only be shallower: choose a smaller "
            "student or a deeper teacher"
        )
    changed = [s for s in range(len(teacher)) if student[s] != teacher[s]]
    if not changed:
        return total, total
    if len(changed) > 1:
        raise UserInputError(
            f"cannot derive cut points from teacher depths {teacher} and student "
            f"depths {student}: they are derivable only when the student is "
            "shallower in exactly one stage; set the blocks to keep explicitly with "
            "student.cut_points=(p1, p2) (config) or p1=, p2= (Python)"
        )
    s = changed[0]
    starts = _stage_starts(teacher)
    return starts[s] + student[s], starts[s + 1]


def shifted_stages(config: SwinConfig) -> tuple[bool, ...]:
    """Per stage: whether its odd blocks shift their windows (the stage exceeds a window)."""
    return tuple(
        window_and_shift(res, config.window_size, shift=True)[1] > 0
        for res in config.stage_resolutions
    )


def kept_block_slots(teacher_depths: Sequence[int], p1: int, p2: int):
    """(stage, student slot k, teacher block j) of every block the cut keeps, j and k local
    to the stage."""
    depths = _check_depths(teacher_depths, "teacher")
    starts = _stage_starts(depths)
    for s in range(len(depths)):
        kept = [b for b in range(starts[s], starts[s + 1]) if b < p1 or b >= p2]
        for k, b in enumerate(kept):
            yield s, k, b - starts[s]


def tail_window_problems(teacher: SwinConfig, p1: int, p2: int) -> list[str]:
    """Where tail_init='teacher' would copy a block into a slot of the other window kind:
    block k of a stage whose windows shift is shifted iff k is odd (timm's rule), so a copied
    teacher block j must have j's parity. The cut points must remove an even number of
    blocks before any copied block of such a stage."""
    shifted = shifted_stages(teacher)
    return [
        f"stage {s}: teacher block {j} ({_kind(j)} windows) would become the student's "
        f"block {k} ({_kind(k)} windows)"
        for s, k, j in kept_block_slots(teacher.depths, p1, p2)
        if shifted[s] and j % 2 != k % 2
    ]


def _kind(block: int) -> str:
    return "shifted" if block % 2 else "unshifted"


def check_cut_points(teacher: SwinConfig, p1: int, p2: int, tail_init: str) -> None:
    """Cut points against the teacher's architecture, before a run: `validate_cut_points`,
    and with tail_init='teacher' no copied block in a slot of the other window kind.

    Refused rather than repaired: the cut points name the teacher blocks the student keeps,
    so choosing other blocks would train a student the user did not ask for, and giving a
    block its own shift would make a student that is no standard Swin (its SwinConfig,
    checkpoints and exports rebuild the alternation from the depths; keep_blocks refuses
    the same for the same reason). The message names cut points that work.
    """
    validate_cut_points(teacher.depths, p1, p2)
    if tail_init != "teacher":
        return  # a random tail is a fresh standard Swin block in every slot
    problems = tail_window_problems(teacher, p1, p2)
    if not problems:
        return
    near = [
        (a, b)
        for a, b in ((p1, p2 - 1), (p1, p2 + 1), (p1 + 1, p2), (p1 - 1, p2))
        if _valid_cut(teacher.depths, a, b) and a < b and not tail_window_problems(teacher, a, b)
    ]
    instead = f"cut_points={near[0]} (an even number of blocks per stage), " if near else ""
    raise UserInputError(
        f"student.cut_points=({p1}, {p2}) with student.tail_init='teacher' puts teacher blocks "
        f"into slots of the other window kind ({problems[0]}"
        + (f"; {len(problems) - 1} more" if len(problems) > 1 else "")
        + f"); set {instead}tail_init='random' (the paper), or keep_blocks="
        "first+teacher_tail / even, which keep blocks of each slot's kind"
    )


def _valid_cut(teacher_depths, p1: int, p2: int) -> bool:
    try:
        validate_cut_points(teacher_depths, p1, p2)
    except UserInputError:
        return False
    return True


# ----------------------------------------------------------------------------- parameter trees


def depths_from_params(params: Mapping[str, Any]) -> tuple[int, ...]:
    """Stage depths read off a Swin parameter tree (layers_0.., each with blocks_0..)."""
    _check_is_swin_tree(params, "parameter tree")
    depths = []
    while f"layers_{len(depths)}" in params:
        stage = params[f"layers_{len(depths)}"]
        blocks = sorted(int(k[len("blocks_") :]) for k in stage if k.startswith("blocks_"))
        if blocks != list(range(len(blocks))) or not blocks:
            raise UserInputError(
                f"layers_{len(depths)} has blocks {blocks}; expected blocks_0.."
                "blocks_{d-1} with d >= 1"
            )
        depths.append(len(blocks))
    return tuple(depths)


def _check_is_swin_tree(params: Any, what: str) -> None:
    if not isinstance(params, Mapping) or "patch_embed" not in params or "layers_0" not in params:
        keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise UserInputError(
            f"{what} is not a Swin 'params' collection (expected top-level keys "
            f"patch_embed, layers_0, ..., norm, head); got {keys}. Pass "
            "variables['params'], not the whole variables dict"
        )


def transfer_plan(
    teacher_depths: Sequence[int], p1: int, p2: int, tail_init: str = "random"
) -> dict[str, str]:
    """Which student module is copied from which teacher module: {student_path: teacher_path}.

    Paths are '/'-joined module paths ('layers_3/blocks_0'), in model order; a module not
    listed keeps the student's init. This is the one definition of the mapping:
    `transfer_params` executes it, and callers log it. Student block k >= p1 is teacher block
    k - p1 + p2. When [p1, p2) removes an odd number of blocks inside a stage, a tail block
    copied with tail_init='teacher' lands at the other parity (shifted <-> unshifted window):
    shapes still match, so this tree transform allows it, and `check_cut_points` (which knows
    the architecture's windows) refuses it before a run.
    """
    if tail_init not in TAIL_INITS:
        raise UserInputError(f"tail_init must be one of {TAIL_INITS}, got {tail_init!r}")
    teacher = _check_depths(teacher_depths, "teacher")
    student = student_depths_from_cuts(teacher, p1, p2)
    t_starts, s_starts = _stage_starts(teacher), _stage_starts(student)
    copy_tail = tail_init == "teacher"

    def local(starts: tuple[int, ...], b: int) -> str:
        s = int(np.searchsorted(starts, b, side="right")) - 1
        return f"layers_{s}/blocks_{b - starts[s]}"

    plan = {"patch_embed": "patch_embed"}
    kept = list(range(p1)) + list(range(p2, sum(teacher)))
    for s in range(len(teacher)):
        if s > 0 and (t_starts[s] < p1 or copy_tail):
            plan[f"layers_{s}/downsample"] = f"layers_{s}/downsample"
        for k in range(s_starts[s], s_starts[s + 1]):
            b = kept[k]
            if b < p1 or copy_tail:
                plan[local(s_starts, k)] = local(t_starts, b)
    if copy_tail:
        plan["norm"] = "norm"
        plan["head"] = "head"
    return plan


def transfer_params(
    teacher_params: Mapping[str, Any],
    student_params: Mapping[str, Any],
    *,
    teacher_depths: Sequence[int],
    p1: int,
    p2: int,
    tail_init: str = "random",
) -> dict[str, Any]:
    """New student params: `student_params` with the modules of `transfer_plan` copied in.

    Both trees are checked against the cut: the teacher must have `teacher_depths` and the
    student `student_depths_from_cuts(teacher_depths, p1, p2)`. Every copied leaf must exist on
    both sides with the same shape; all problems are collected and raised together, naming the
    paths (e.g. a head with another number of classes under tail_init='teacher'). Copied leaves
    take the student's dtype; uncopied leaves are the student's own objects, bit for bit.
    Arrays are shared, not duplicated (JAX arrays are immutable).
    """
    _check_is_swin_tree(teacher_params, "teacher_params")
    _check_is_swin_tree(student_params, "student_params")
    teacher_depths = _check_depths(teacher_depths, "teacher")
    expected_student = student_depths_from_cuts(teacher_depths, p1, p2)
    found_teacher, found_student = (
        depths_from_params(teacher_params),
        depths_from_params(student_params),
    )
    if found_teacher != teacher_depths:
        raise UserInputError(
            f"teacher_params have depths {found_teacher}, but teacher_depths says {teacher_depths}"
        )
    if found_student != expected_student:
        raise UserInputError(
            f"student_params have depths {found_student}, but cutting teacher {teacher_depths} "
            f"at p1={p1}, p2={p2} gives {expected_student}; build the student with those "
            "depths or change the cut points"
        )

    return copy_modules(
        teacher_params, student_params, transfer_plan(teacher_depths, p1, p2, tail_init)
    )


def copy_modules(
    teacher_params: Mapping[str, Any], student_params: Mapping[str, Any], plan: Mapping[str, str]
) -> dict[str, Any]:
    """`student_params` with the modules of `plan` ({student_path: teacher_path}) copied in.

    Every copied leaf must exist on both sides with the same shape; all problems are collected
    and raised together, naming the paths. Copied leaves take the student's dtype; the others
    are the student's own objects. A head in the plan is skipped when neither side has one.
    """
    plan = dict(plan)
    if "head" not in teacher_params and "head" not in student_params:
        plan.pop("head", None)  # num_classes == 0 on both sides: nothing to copy
    teacher = traverse_util.flatten_dict(teacher_params, sep="/")
    student = traverse_util.flatten_dict(student_params, sep="/")
    problems = []
    for s_path, t_path in plan.items():
        t_leaves, s_leaves = _module_leaves(teacher, t_path), _module_leaves(student, s_path)
        if not t_leaves or not s_leaves:
            side, path = ("teacher", t_path) if not t_leaves else ("student", s_path)
            problems.append(f"{side} has no module {path}")
            continue
        for name in sorted(set(t_leaves) ^ set(s_leaves)):
            where, path = ("teacher", t_path) if name in t_leaves else ("student", s_path)
            problems.append(f"{path + name} exists only in the {where} ({s_path} <- {t_path})")
        for name in sorted(set(t_leaves) & set(s_leaves)):
            t_leaf, s_leaf = t_leaves[name], s_leaves[name]
            if np.shape(t_leaf) != np.shape(s_leaf):
                problems.append(
                    f"shape mismatch: student {s_path + name} {np.shape(s_leaf)} "
                    f"<- teacher {t_path + name} {np.shape(t_leaf)}"
                )
            else:
                student[s_path + name] = (
                    t_leaf.astype(s_leaf.dtype) if t_leaf.dtype != s_leaf.dtype else t_leaf
                )
    if problems:
        raise UserInputError(
            "cannot transfer teacher weights into the student:\n  " + "\n  ".join(problems)
        )
    return traverse_util.unflatten_dict(student, sep="/")


def _module_leaves(flat: dict[str, Any], path: str) -> dict[str, Any]:
    """The leaves of the module at `path` of a flattened tree, by their name below it."""
    return {
        key[len(path) :]: leaf
        for key, leaf in flat.items()
        if key == path or key.startswith(path + "/")
    }
