"""Students made of any teacher blocks (`student.keep_blocks`): which blocks, and their copy.

A keep list names, stage by stage, the teacher blocks the student keeps, in the teacher's
order, stages separated by ';': '0,1;0,1;4,5;0,1' turns Swin-T (2, 2, 6, 2) into a Swin-N
shape that keeps stage 2's last pair. The student has the teacher's stages, widths and
windows; its depths are the lists' lengths and its block k of stage s is the teacher's k-th
kept block of that stage.

Shifted windows. In every Swin (timm's rule, swin_flax/model/swin.py) block k of a stage is
shifted iff k is odd, unless the stage is no larger than one window (then no block shifts).
A keep list must respect that: in a stage whose windows shift, the k-th kept block must be a
teacher block of slot k's kind (an even index for even k), so blocks are kept in adjacent
unshifted/shifted pairs, possibly ending on one unshifted block ('0,3' and '0,1,4' are
valid, '1,2' is not). Refusing, rather than giving each block its own shift, keeps the
student a standard Swin described by its SwinConfig alone: its checkpoints, its timm
.safetensors and its exports rebuild the alternation from the depths and compute what it
computes. A keep-every-block student is therefore the teacher itself, bit for bit.

The policies (D: the student's depths, T: the teacher's):
  first               the paper's cut points: each stage's first D_s blocks, copied only up
                      to the first dropped block (T[:p1] of Algorithm 1), the rest random
  first+teacher_tail  the same blocks, every one copied
  even                blocks floor(k T_s / D_s), k < D_s (DistilBERT's one in two for T = 2D);
                      where windows shift, each moved forward to the next block of its
                      slot's kind: Swin-T -> M keeps 0,1,4,5 of stage 2 at 224 px
  importance          drop the blocks whose skipping changes the teacher's logits least
                      (`costs`: swin_flax.pipeline.block_importance, one block or one adjacent pair at
                      a time; the costs of a removal's parts are summed)
What a keep-list student copies: the patch embedding, every kept block, every downsampling
layer and the final norm; the head too with `copy_head` (student.tail_init='teacher').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from swin_flax.errors import UserInputError
from swin_flax.model.config import SwinConfig
from swin_flax.weights.transfer import copy_modules, depths_from_params
from swin_flax.weights.transfer import shifted_stages as shifted_stages  # part of this API

Blocks = tuple[tuple[int, ...], ...]  # per stage, the kept teacher block indices
Costs = Mapping[tuple[int, tuple[int, ...]], float]  # (stage, skipped blocks) -> cost


@dataclasses.dataclass(frozen=True)
class KeptBlocks:
    """The teacher blocks a student keeps and which of its modules start as the teacher's."""

    blocks: Blocks
    policy: str = "list"  # the policy that chose them, or 'list' when written out
    copy_tail: bool = True  # False (the paper's `first`): copy only before the first drop
    copy_head: bool = False

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(stage) for stage in self.blocks)

    @property
    def text(self) -> str:
        return format_blocks(self.blocks)


def parse_blocks(text: str) -> Blocks:
    """'0,1;0,1;4,5;0,1' -> ((0, 1), (0, 1), (4, 5), (0, 1)); an empty stage is ()."""
    stages = []
    for part in text.split(";"):
        tokens = [t.strip() for t in part.split(",") if t.strip()]
        if not all(t.isdigit() for t in tokens):
            raise UserInputError(
                f"keep_blocks stage {part.strip()!r}: expected block indices separated by ',' "
                "(stages separated by ';'), e.g. '0,1;0,1;4,5;0,1'"
            )
        stages.append(tuple(int(t) for t in tokens))
    return tuple(stages)


def format_blocks(blocks: Blocks) -> str:
    return ";".join(",".join(str(j) for j in stage) for stage in blocks)


def block_problems(blocks: Blocks, teacher_depths: Sequence[int], shifted: Sequence[bool]):
    """Why a keep list cannot be cut from a teacher of these depths (every problem)."""
    depths = tuple(teacher_depths)
    if len(blocks) != len(depths):
        return [
            f"keep_blocks names {len(blocks)} stage(s), the teacher (depths {depths}) has "
            f"{len(depths)}: one ';'-separated list per stage"
        ]
    problems = []
    for s, (kept, depth) in enumerate(zip(blocks, depths)):
        if not kept:
            problems.append(
                f"stage {s} keeps no block: every stage keeps at least one (its downsampling "
                "and width depend on it)"
            )
        unknown = [j for j in kept if j >= depth]
        problems += [f"stage {s} has no block {j}: its blocks are 0..{depth - 1}" for j in unknown]
        if unknown:
            continue  # the order and windows of blocks that do not exist are moot
        if list(kept) != sorted(set(kept)):
            problems.append(
                f"stage {s} lists {','.join(map(str, kept))}: blocks are kept in the "
                f"teacher's order, each once (write {','.join(map(str, sorted(set(kept))))})"
            )
        elif shifted[s]:
            problems += [
                f"stage {s}: block {j} has {_windows(j)} windows but would be the student's "
                f"block {k}, whose windows are {_windows(k)}; where windows shift, keep "
                "unshifted/shifted pairs such as 2,3 (the k-th kept block must be even for "
                "even k)"
                for k, j in enumerate(kept)
                if j % 2 != k % 2
            ]
    return problems


def _windows(block: int) -> str:
    return "shifted" if block % 2 else "unshifted"


def check_blocks(blocks: Blocks, teacher_depths: Sequence[int], shifted: Sequence[bool]) -> None:
    problems = block_problems(blocks, teacher_depths, shifted)
    if problems:
        raise UserInputError(
            f"student.keep_blocks {format_blocks(blocks)!r} cannot be cut from the teacher "
            f"(depths {tuple(teacher_depths)}):\n  - " + "\n  - ".join(problems)
        )


def check_depths(depths: Sequence[int], teacher_depths: Sequence[int]) -> None:
    """A policy's target depths: the teacher's stages, each keeping 1..all of its blocks."""
    depths, teacher = tuple(depths), tuple(teacher_depths)
    if len(depths) != len(teacher) or not all(1 <= d <= t for d, t in zip(depths, teacher)):
        raise UserInputError(
            f"a student of depths {depths} cannot keep blocks of a teacher of depths {teacher}: "
            "it needs the teacher's number of stages, each keeping between 1 and all of its "
            "blocks"
        )


# ----------------------------------------------------------------------------- policies


def first_blocks(teacher_depths: Sequence[int], depths: Sequence[int]) -> Blocks:
    check_depths(depths, teacher_depths)
    return tuple(tuple(range(d)) for d in depths)


def even_blocks(
    teacher_depths: Sequence[int], depths: Sequence[int], shifted: Sequence[bool]
) -> Blocks:
    check_depths(depths, teacher_depths)
    return tuple(_even_stage(t, d, shift) for t, d, shift in zip(teacher_depths, depths, shifted))


def _even_stage(teacher_depth: int, depth: int, shifted: bool) -> tuple[int, ...]:
    kept: list[int] = []
    for k in range(depth):
        j = max(k * teacher_depth // depth, kept[-1] + 1 if kept else 0)
        if shifted and j % 2 != k % 2:
            j += 1  # the next block of slot k's kind; never past the end (tested for T <= 40)
        kept.append(j)
    return tuple(kept)


def important_blocks(
    teacher_depths: Sequence[int], depths: Sequence[int], shifted: Sequence[bool], costs: Costs
) -> Blocks:
    """Per stage, the valid keep list whose dropped blocks cost least in total (ties: the
    one that keeps earlier blocks)."""
    check_depths(depths, teacher_depths)
    return tuple(
        _important_stage(s, t, d, shifted[s], costs)
        for s, (t, d) in enumerate(zip(teacher_depths, depths))
    )


def _important_stage(stage: int, teacher_depth: int, depth: int, shifted: bool, costs: Costs):
    if depth == teacher_depth:
        return tuple(range(depth))  # nothing dropped: nothing to rank

    def cost(*blocks: int) -> float:
        if (stage, blocks) not in costs:
            raise UserInputError(
                f"the block importance has no measurement of stage {stage} block(s) "
                f"{','.join(map(str, blocks))}: it was measured on another teacher"
            )
        return float(costs[(stage, blocks)])

    best = None
    for removed, total in _removals(teacher_depth, teacher_depth - depth, shifted, cost):
        key = (total, tuple(-j for j in sorted(removed, reverse=True)))
        if best is None or key < best[0]:
            best = (key, removed)
    return tuple(j for j in range(teacher_depth) if j not in best[1])


def _removals(teacher_depth: int, count: int, shifted: bool, cost) -> Iterator[tuple[set, float]]:
    """Every valid set of `count` blocks to drop with its summed cost. Where windows shift,
    a valid removal is adjacent pairs (keeping the alternation after them) plus, for an odd
    count, the last block left; elsewhere any blocks."""
    if not shifted:
        order = sorted(range(teacher_depth), key=lambda j: (cost(j), -j))
        yield set(order[:count]), sum(cost(j) for j in order[:count])
        return
    for starts in _disjoint_pairs(teacher_depth, count // 2):
        removed = {j for p in starts for j in (p, p + 1)}
        total = sum(cost(p, p + 1) for p in starts)
        if count % 2:
            last = max(j for j in range(teacher_depth) if j not in removed)
            removed.add(last)
            total += cost(last)
        yield removed, total


def _disjoint_pairs(n: int, count: int, start: int = 0) -> Iterator[tuple[int, ...]]:
    """Start indices of `count` non-overlapping pairs (p, p + 1) within range(start, n)."""
    if count == 0:
        yield ()
        return
    for p in range(start, n - 2 * count + 1):
        for rest in _disjoint_pairs(n, count - 1, p + 2):
            yield (p, *rest)


# ----------------------------------------------------------------------------- the copy


def first_dropped(teacher_depths: Sequence[int], blocks: Blocks) -> int:
    """Global index of the first teacher block the student drops (the total if none)."""
    start = 0
    for depth, kept in zip(teacher_depths, blocks):
        missing = [j for j in range(depth) if j not in kept]
        if missing:
            return start + missing[0]
        start += depth
    return start


def keep_plan(teacher_depths: Sequence[int], kept: KeptBlocks) -> dict[str, str]:
    """{student module: teacher module} of a keep-list student, in model order; modules not
    listed keep the student's own init."""
    starts = np.concatenate([[0], np.cumsum(teacher_depths)]).astype(int)
    limit = sum(teacher_depths) if kept.copy_tail else first_dropped(teacher_depths, kept.blocks)
    plan = {"patch_embed": "patch_embed"}
    for s, stage in enumerate(kept.blocks):
        if s > 0 and (kept.copy_tail or starts[s] < limit):
            plan[f"layers_{s}/downsample"] = f"layers_{s}/downsample"
        for k, j in enumerate(stage):
            if kept.copy_tail or starts[s] + j < limit:
                plan[f"layers_{s}/blocks_{k}"] = f"layers_{s}/blocks_{j}"
    if kept.copy_tail:
        plan["norm"] = "norm"
    if kept.copy_head:
        plan["head"] = "head"
    return plan


def transfer_kept(
    teacher_params: Mapping[str, Any], student_params: Mapping[str, Any], kept: KeptBlocks
) -> dict[str, Any]:
    """`student_params` with the modules of `keep_plan` copied from the teacher. The trees'
    depths are checked against the keep list (the windows' kinds are the caller's check:
    `check_blocks`, which needs the architecture)."""
    teacher_depths = depths_from_params(teacher_params)
    problems = block_problems(kept.blocks, teacher_depths, [False] * len(teacher_depths))
    if problems:
        raise UserInputError(f"keep_blocks {kept.text!r}: " + "; ".join(problems))
    found = depths_from_params(student_params)
    if found != kept.depths:
        raise UserInputError(
            f"student_params have depths {found}, but keep_blocks {kept.text!r} keeps "
            f"{kept.depths}; build the student with those depths"
        )
    return copy_modules(teacher_params, student_params, keep_plan(teacher_depths, kept))


def exit_student(config: SwinConfig, blocks: Blocks, params: Mapping[str, Any], **run_options):
    """`(student, student_params)`: the exit of a multi-exit model (swin_flax/model/exits.py)
    with parameters `params` as a standalone Swin of the exit's depths, every module its
    copy (the kept blocks, the downsampling, the final norm, the head). Its logits are the
    exit's; export, int8, predict and timm export take it like any student."""
    from swin_flax.model.swin import SwinTransformer, init_params

    check_blocks(blocks, config.depths, shifted_stages(config))
    depths = tuple(len(kept) for kept in blocks)
    student = SwinTransformer(dataclasses.replace(config, depths=depths), **run_options)
    kept = KeptBlocks(blocks, "exit", copy_tail=True, copy_head=True)
    return student, transfer_kept(params, init_params(student, 0), kept)
