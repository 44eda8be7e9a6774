"""Which regime a run is in, and which student to keep: both decided on the validation
carve-out (data.validation_fraction), never on the test split.

The paper's Table IX is the regime of a teacher well above its transferred student: there
distillation pulls the student up. When the transferred student already matches or beats
its teacher (a small target set, a teacher fine-tuned briefly), distillation pulls it toward
the weaker teacher instead; `regime_warning` says so as soon as the transfer student is
scored, before its distilled sibling trains. `recommendation` names the variant with the
best mean validation top-1, for summary.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from swin_flax.pipeline.summaries import mean_std, row_variant, variant_label


def percent_top1(model, params, data, batch_size: int) -> float:
    """Top-1 in percent, rounded as results rows are (the teacher's validation score)."""
    from swin_flax.training.evaluate import top1_accuracy

    return round(100.0 * top1_accuracy(model, params, data, batch_size=batch_size), 2)


def is_student(row: dict) -> bool:
    """Every row but the teachers' ('... (teacher)', '... (teacher, source task)'); the strong
    scratch baseline is a student a user may keep."""
    return re.search(r"\(teacher[^)]*\)$", str(row["model"])) is None


def regime_warning(teacher_val: float, transfer_val: float, *, stage: str) -> str | None:
    """One warning line when the transferred student scores at least its teacher on the
    validation set; None when the teacher is ahead (the paper's regime)."""
    if transfer_val < teacher_val:
        return None
    return (
        f"the transferred student ({stage}) already scores {transfer_val:.2f}% on the "
        f"validation set, its teacher {teacher_val:.2f}%: distillation will pull it toward a "
        "weaker teacher. Keep the transfer student (no distillation measured in this regime "
        "beat it on validation) or train a stronger teacher; if you distil anyway, KL at a "
        "temperature averaged with the labels' loss (distill.distillation=kl, temperature=4, "
        "joint=arithmetic, alpha=0.5) tied it there, where the paper's loss lost (see the "
        "README's regime section)."
    )


def recommendation(rows: Sequence[dict]) -> dict | None:
    """The student variant with the best mean validation top-1 (ties: the first), with its
    validation and test statistics; None without validation scores."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if is_student(row) and row.get("val_top1") is not None:
            groups.setdefault(row_variant(row), []).append(row)
    if not groups:
        return None
    best = max(groups, key=lambda v: mean_std([r["val_top1"] for r in groups[v]])[0])
    members = groups[best]
    return {
        "variant": variant_label(best),
        "n": len(members),
        "val": mean_std([r["val_top1"] for r in members]),
        "test": mean_std([r["top1"] for r in members]),
    }


def _mean_pm(stats: tuple[float, float | None]) -> str:
    mean, std = stats
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def recommendation_section(rows: Sequence[dict]) -> str:
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
