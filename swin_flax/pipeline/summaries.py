"""Statistics over seeds: each variant's top-1 mean ± std, its gain over scratch with the
spread of that gain, and whether the gain is beyond the spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A gain counts as "beyond the spread" when it exceeds this many standard errors.
BEYOND_FACTOR = 2.0


Variant = tuple  # (model: str, init: str, distillation: bool)


@dataclass(frozen=True)
class VariantSummary:
    """One table row: a variant's top-1 over its seeds, and its gain over scratch.

    `std` is the sample standard deviation (ddof=1), None for n=1. `gain`/`gain_spread`/
    `beyond_spread` are None where the model has no scratch variant (or for scratch itself);
    `gain_spread` and `beyond_spread` are also None where either side has a single seed.
    `throughput` maps each device to (median images/s, noisy).
    """

    model: str
    init: str
    distillation: bool
    seeds: tuple
    top1: tuple
    mean: float
    std: float | None
    params: int | None
    throughput: dict
    gain: float | None = None
    gain_spread: float | None = None
    beyond_spread: bool | None = None
    is_scratch: bool = False

    @property
    def n(self) -> int:
        return len(self.top1)

    @property
    def variant(self) -> Variant:
        return (self.model, self.init, self.distillation)

    @property
    def label(self) -> str:
        return variant_label(self.variant)


def variant_label(variant: Variant) -> str:
    model, init, distill = variant
    return f"{model} {init}{' +KD' if distill else ''}"


def is_scratch(variant: Variant) -> bool:
    """A student trained from scratch on labels alone: the baseline of its model's gains.
    References with a parenthesised label, "... (teacher)" and "... (strong scratch)", are
    no student's baseline."""
    return variant[1] == "random" and not variant[2] and not variant[0].endswith(")")


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); the std is None for a single value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def gain_over(
    values: Sequence[float], baseline: Sequence[float]
) -> tuple[float, float | None, bool | None]:
    """(gain, spread, beyond): the difference of the means of `values` and `baseline`.

    The spread is sqrt(s1²/n1 + s2²/n2), the standard error of the difference of two
    means (s: sample std, ddof=1). The gain is beyond the spread when |gain| > 2 × spread,
    roughly a 95% interval that excludes zero. With a single seed on either side there is
    no spread: spread and beyond are None.
    """
    m1, s1 = mean_std(values)
    m2, s2 = mean_std(baseline)
    gain = m1 - m2
    if s1 is None or s2 is None:
        return gain, None, None
    spread = math.sqrt(s1**2 / len(values) + s2**2 / len(baseline))
    return gain, spread, abs(gain) > BEYOND_FACTOR * spread


def row_variant(row: dict) -> Variant:
    return (str(row["model"]), str(row["init"]), bool(row["distillation"]))


def summarize(rows: Sequence[dict]) -> list[VariantSummary]:
    """One VariantSummary per variant, grouped by model in order of first appearance."""
    groups: dict[Variant, list[dict]] = {}
    for row in rows:
        groups.setdefault(row_variant(row), []).append(row)
    models = list(dict.fromkeys(v[0] for v in groups))
    ordered = sorted(groups, key=lambda v: (models.index(v[0]), not is_scratch(v)))
    scratch = {v[0]: [float(r["top1"]) for r in groups[v]] for v in groups if is_scratch(v)}
    summaries = []
    for variant in ordered:
        members = groups[variant]
        top1 = tuple(float(r["top1"]) for r in members)
        mean, std = mean_std(top1)
        gain = spread = beyond = None
        if variant[0] in scratch and not is_scratch(variant):
            gain, spread, beyond = gain_over(top1, scratch[variant[0]])
        params = next((int(r["params"]) for r in members if r.get("params") is not None), None)
        summaries.append(
            VariantSummary(
                model=variant[0],
                init=variant[1],
                distillation=variant[2],
                seeds=tuple(r.get("seed") for r in members),
                top1=top1,
                mean=mean,
                std=std,
                params=params,
                throughput=_throughput(members),
                gain=gain,
                gain_spread=spread,
                beyond_spread=beyond,
                is_scratch=is_scratch(variant),
            )
        )
    return summaries


def _throughput(members: Sequence[dict]) -> dict[str, tuple[float, bool]]:
    """device -> (median over seeds of the rows' median images/s, any row noisy).

    Kept per device: throughput from different machines is not comparable.
    """
    per_device: dict[str, list[dict]] = {}
    for row in members:
        if row.get("images_per_second") is not None:
            per_device.setdefault(str(row.get("device") or "?"), []).append(row)
    return {
        device: (
            statistics.median(float(r["images_per_second"]) for r in rs),
            any(bool(r.get("throughput_noisy")) for r in rs),
        )
        for device, rs in per_device.items()
    }
