"""How long each stage of a run trains: said before it starts, refused when absurd.

`--config.finetune.epochs=1e9` (a typo for 1e2?) would start 2.1e10 steps and, without the
progress bar, print nothing for hours. Before the data loads, a stage whose epochs alone
exceed `loop.max_stage_steps` is refused (every epoch is at least one step); once the data
is loaded, every stage's exact step count is printed, and one over the bound is refused.
`loop.max_stage_steps=0` lifts the bound for a run that means it. The time a stage will
take is printed by its progress line once its first steps are timed (training/metrics.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from swin_flax.errors import UserInputError
from swin_flax.pipeline import sweeps
from swin_flax.pipeline.variants import StudentVariant
from swin_flax.settings import OptimSettings, RunSettings
from swin_flax.training.distributed import is_main_process
from swin_flax.training.optim import steps_from_epochs

# How to lift the bound, said wherever it is hit.
LIFT_ADVICE = "lower the epochs, or set loop.max_stage_steps higher (0: no limit) if you mean it"


@dataclass(frozen=True)
class StageLength:
    """One stage's length: `key` is its config section (finetune, distill, pretrain)."""

    label: str
    key: str
    epochs: float
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return steps_from_epochs(self.epochs, self.steps_per_epoch)

    def describe(self) -> str:
        return (
            f"{self.label}: {self.steps:,} steps ({self.epochs:g} epochs of "
            f"{self.steps_per_epoch:,})"
        )


def epoch_problems(settings: RunSettings) -> list[str]:
    """Before the data loads: stages whose epochs alone (each at least one step) exceed
    loop.max_stage_steps."""
    bound = settings.loop.max_stage_steps
    names = (
        ("pretrain", "finetune", "distill") if settings.pretrain.root else ("finetune", "distill")
    )
    return [
        f"{name}.epochs {epochs:g} gives at least {epochs:,.0f} steps, more than "
        f"loop.max_stage_steps {bound:,}; {LIFT_ADVICE}"
        for name in names
        if bound and (epochs := getattr(settings, name).epochs) > bound
    ]


def stage_lengths(
    settings: RunSettings, variants: list[StudentVariant], num_train: int
) -> list[StageLength]:
    """The stages this run trains on `num_train` examples: the teacher's fine-tuning
    (unless teacher.finetuned gives it), then the students of each sweep row."""
    lengths = []
    teacher_needed = settings.evaluate_teacher or any(v.transfer or v.distill for v in variants)
    if teacher_needed and not settings.teacher.finetuned:
        lengths.append(_length("fine-tune teacher", "finetune", settings.finetune, num_train))
    # The strong scratch baseline (random+long) trains as many steps as the teacher did.
    baseline = " but the strong scratch baseline" if any(v.long for v in variants) else ""
    for row in sweeps.sweep_rows(settings) if variants else ():
        label = f"each student{baseline}" + (f" of sweep row {row.name!r}" if row.name else "")
        lengths.append(_length(label, "distill", row.settings(settings).distill, num_train))
    return lengths


def _length(label: str, key: str, stage: OptimSettings, num_train: int) -> StageLength:
    return StageLength(label, key, stage.epochs, max(1, num_train // stage.batch_size))


def check_stage_lengths(
    settings: RunSettings, variants: list[StudentVariant], num_train: int
) -> None:
    """Print every stage's step count; refuse one longer than loop.max_stage_steps."""
    lengths = stage_lengths(settings, variants, num_train)
    bound = settings.loop.max_stage_steps
    too_long = [length for length in lengths if bound and length.steps > bound]
    if too_long:
        worst = max(too_long, key=lambda length: length.steps)
        raise UserInputError(
            f"{worst.key}.epochs {worst.epochs:g} makes {worst.describe()}, more than "
            f"loop.max_stage_steps {bound:,}; {LIFT_ADVICE}"
        )
    if is_main_process():
        for length in lengths:
            print(f"stage length: {length.describe()}", flush=True)
