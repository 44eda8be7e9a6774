"""`student.budget`: the depths of the largest student, cut from the teacher, that fits.

    params:5.2M      at most 5.2 million parameters (head included), counted exactly
    latency:2.5ms    at most 2.5 ms per image, 1000 / the images per second measured on this
                     device at eval.throughput_batch_size (the results' img/s column)

The candidates are every depth tuple the teacher can be cut to (1..T_s blocks per stage);
the pick is the one with the most parameters within the budget (ties: the deeper early
stages). Parameters are exact: a student's count is the teacher's minus the blocks it drops
(a stage's blocks all have the same size). Latency is timed, not modelled: the smallest
student and one extra block per stage are measured, a candidate's latency is predicted from
those (blocks add up), and the best predicted candidate is measured before it is taken (the
next one if it does not fit). Measurements are noisy on a busy machine and are repeated in
each run, so a latency budget may pick other depths in another run; the pick is printed.
A budget no student meets (not even one block per stage) is an error before anything trains.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re

import jax
import jax.numpy as jnp

from swin_flax import cli
from swin_flax.errors import UserInputError
from swin_flax.model.config import SwinConfig
from swin_flax.model.swin import SwinTransformer, abstract_params, count_params, init_params
from swin_flax.settings import BUDGET_PATTERN
from swin_flax.training.evaluate import measure_throughput

_SUFFIX = {"": 1.0, "k": 1e3, "M": 1e6}
MAX_LATENCY_CHECKS = 4  # candidates measured after the prediction, at most


@dataclasses.dataclass(frozen=True)
class Budget:
    kind: str  # 'params' or 'latency'
    limit: float  # parameters, or milliseconds per image

    @property
    def text(self) -> str:
        return f"params:{self.limit:,.0f}" if self.kind == "params" else f"latency:{self.limit:g}ms"

    def describe(self, value: float) -> str:
        if self.kind == "params":
            return f"{value / 1e6:.2f}M parameters"
        return f"{value:.3f} ms per image"


def parse_budget(text: str) -> Budget:
    match = re.fullmatch(BUDGET_PATTERN, text.strip())
    if match is None:
        raise UserInputError(
            f"student.budget {text!r}: expected 'params:N' (e.g. params:5.2M, params:800k) or "
            "'latency:Xms' (milliseconds per image)"
        )
    if match.group(1):
        return Budget("params", float(match.group(2)) * _SUFFIX[match.group(3)])
    return Budget("latency", float(match.group(5)))


def candidate_depths(teacher_depths: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(1, t + 1) for t in teacher_depths)))


def params_per_block(teacher: SwinConfig) -> tuple[int, tuple[int, ...]]:
    """(parameters outside the blocks, parameters of one block of each stage)."""
    tree = abstract_params(SwinTransformer.from_config(teacher))
    per_block = tuple(
        count_params(tree[f"layers_{s}"]["blocks_0"]) for s in range(len(teacher.depths))
    )
    rest = count_params(tree) - sum(d * b for d, b in zip(teacher.depths, per_block))
    return rest, per_block


def student_params(depths, rest: int, per_block: tuple[int, ...]) -> int:
    return rest + sum(d * b for d, b in zip(depths, per_block))


def pick_depths(
    budget: Budget, teacher: SwinConfig, *, batch_size: int, repeats: int, dtype
) -> tuple[int, ...]:
    """The depths `budget` picks for students of `teacher` (its num_classes counts)."""
    teacher = teacher.replace(drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
    return _pick(budget, teacher, max(batch_size, 1), repeats, dtype)


@functools.cache  # one measurement per run: the pre-flight's, reused
def _pick(budget: Budget, teacher: SwinConfig, batch_size: int, repeats: int, dtype):
    rest, per_block = params_per_block(teacher)
    ranked = sorted(
        candidate_depths(teacher.depths),
        key=lambda d: (student_params(d, rest, per_block), d),
        reverse=True,
    )
    if budget.kind == "params":
        fits = [d for d in ranked if student_params(d, rest, per_block) <= budget.limit]
        if not fits:
            _unmeetable(budget, teacher, student_params(ranked[-1], rest, per_block))
        depths, value = fits[0], student_params(fits[0], rest, per_block)
    else:
        depths, value = _fastest_fitting(budget, teacher, ranked, batch_size, repeats, dtype)
    cli.note(
        f"student.budget {budget.text} picks depths {depths} "
        f"({budget.describe(value)}; the teacher {teacher.depths})"
    )
    return depths


def _fastest_fitting(budget, teacher, ranked, batch_size, repeats, dtype):
    def latency(depths) -> float:
        return latency_ms(teacher.replace(depths=depths), batch_size, repeats, dtype)

    smallest = ranked[-1]
    base = latency(smallest)
    if base > budget.limit:
        _unmeetable(budget, teacher, base)
    one_more = [
        latency(tuple(d + (i == s) for i, d in enumerate(smallest))) - base
        if teacher.depths[s] > 1
        else 0.0
        for s in range(len(smallest))
    ]
    predicted = [
        d
        for d in ranked
        if base + sum((n - 1) * max(c, 0.0) for n, c in zip(d, one_more)) <= budget.limit
    ]
    for depths in predicted[:MAX_LATENCY_CHECKS]:
        if depths == smallest:
            break
        measured = latency(depths)
        if measured <= budget.limit:
            return depths, measured
    return smallest, base


def measurement_dtype(compute_dtype: str):
    """The compute dtype students will run in (run.compute_dtype's rule: 'auto' is bf16 on
    GPU/TPU, float32 on CPU), for timing them as they will run."""
    if compute_dtype == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[compute_dtype]


def latency_ms(config: SwinConfig, batch_size: int, repeats: int, dtype) -> float:
    model = SwinTransformer.from_config(config, dtype=dtype)
    speed = measure_throughput(model, init_params(model), batch_size=batch_size, repeats=repeats)
    return 1000.0 / speed["images_per_second"]


def _unmeetable(budget: Budget, teacher: SwinConfig, smallest: float):
    raise UserInputError(
        f"student.budget {budget.text} cannot be met: the smallest student "
        f"that can be cut from the teacher (depths {teacher.depths}), one block per stage, "
        f"has {budget.describe(smallest)}. Raise the budget or choose a smaller teacher"
    )
