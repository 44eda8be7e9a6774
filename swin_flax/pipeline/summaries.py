"""Statistics over seeds: each variant's top-1 mean ± std, its gain over scratch with the
spread of that gain and whether the gain is beyond it; and the student to keep, chosen on
the validation carve-out (data.validation_fraction), never on the test split.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from swin_flax.pipeline.results import ResultRow, mean_std

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


def summarize(rows: Sequence[ResultRow]) -> list[VariantSummary]:
    """One VariantSummary per variant, grouped by model in order of first appearance, the
    model's scratch variant first."""
    groups: dict[Variant, list[ResultRow]] = {}
    for row in rows:
        groups.setdefault(row.variant, []).append(row)
    scratch = {
        v[0]: [r.top1 for r in members] for v, members in groups.items() if members[0].is_scratch
    }
    models = list(dict.fromkeys(v[0] for v in groups))
    ordered = sorted(groups, key=lambda v: (models.index(v[0]), not groups[v][0].is_scratch))
    summaries = []
    for variant in ordered:
        members = groups[variant]
        top1 = tuple(float(r.top1) for r in members)
        mean, std = mean_std(top1)
        gain = spread = beyond = None
        if variant[0] in scratch and not members[0].is_scratch:
            gain, spread, beyond = gain_over(top1, scratch[variant[0]])
        params = next((int(r.params) for r in members if r.params is not None), None)
        summaries.append(
            VariantSummary(
                *variant,
                seeds=tuple(r.seed for r in members),
                top1=top1,
                mean=mean,
                std=std,
                params=params,
                throughput=_throughput(members),
                gain=gain,
                gain_spread=spread,
                beyond_spread=beyond,
                is_scratch=members[0].is_scratch,
            )
        )
    return summaries


def _throughput(members: Sequence[ResultRow]) -> dict[str, tuple[float, bool]]:
    """device -> (median over seeds of the rows' median images/s, any row noisy).

    Kept per device: throughput from different machines is not comparable.
    """
    per_device: dict[str, list[dict]] = {}
    for row in members:
        if row.throughput and row.throughput.get("images_per_second") is not None:
            per_device.setdefault(str(row.throughput.get("device") or "?"), []).append(
                row.throughput
            )
    return {
        device: (
            statistics.median(float(t["images_per_second"]) for t in ts),
            any(bool(t.get("throughput_noisy")) for t in ts),
        )
        for device, ts in per_device.items()
    }


def recommendation(rows: Sequence[ResultRow]) -> dict | None:
    """The student variant with the best mean validation top-1 (ties: the first), with its
    validation and test statistics; None without validation scores. Teachers are no
    candidates; the strong scratch baseline is a student a user may keep."""
    groups: dict[Variant, list[ResultRow]] = {}
    for row in rows:
        if row.role == "student" and row.val_top1 is not None:
            groups.setdefault(row.variant, []).append(row)
    if not groups:
        return None
    best = max(groups, key=lambda v: mean_std([r.val_top1 for r in groups[v]])[0])
    members = groups[best]
    return {
        "variant": variant_label(best),
        "n": len(members),
        "val": mean_std([r.val_top1 for r in members]),
        "test": mean_std([r.top1 for r in members]),
    }


def _mean_pm(stats: tuple[float, float | None]) -> str:
    mean, std = stats
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def recommendation_section(rows: Sequence[ResultRow]) -> str:
    """The summary.md section: the recommended student and why; '' without validation."""
    best = recommendation(rows)
    if best is None:
        return ""
    return (
        "## Recommended\n\n"
        f"**{best['variant']}**: the best mean validation top-1 "
        f"({_mean_pm(best['val'])} %, n = {best['n']}); its test top-1 "
        f"{_mean_pm(best['test'])} %. Chosen on the validation carve-out, not on the test split.\n"
    )
