"""How long each stage of a run trains, before anything loads: the 'stage length:' lines
and the strong scratch baseline's budget (the teacher's steps), from the data's sizes."""

from __future__ import annotations

import dataclasses

from swin_flax.data.sizes import SplitSizes
from swin_flax.settings import OptimSettings, RunSettings
from swin_flax.training.optim import steps_from_epochs


@dataclasses.dataclass(frozen=True)
class StageLength:
    """What a 'stage length:' line says: `key` is the config section (finetune, ...)."""

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


def stage_lengths(settings: RunSettings, rows, variants, data, source) -> list[StageLength]:
    """The stages' lengths on this data: pretraining, the teacher's fine-tuning, then the
    students of each sweep row (and the strong scratch baseline's, the teacher's steps)."""
    if data.train is None:
        return []
    lengths = []
    if source is not None and source.train is not None:
        p = settings.pretrain
        lengths.append(length_of("pretrain teacher (source task)", "pretrain", p, source.train))
    needs_teacher = settings.evaluate_teacher or any(v.transfer or v.distill for v in variants)
    if needs_teacher and not settings.teacher.finetuned:
        lengths.append(length_of("fine-tune teacher", "finetune", settings.finetune, data.train))
    if any(v.exits for v in variants):  # the teacher's recipe, one per row and seed
        lengths.append(
            length_of("each multi-exit model", "finetune", settings.finetune, data.train)
        )
    long = " but the strong scratch baseline" if any(v.long for v in variants) else ""
    for row, row_settings in rows if any(not v.exits for v in variants) else ():
        label = f"each student{long}" + (f" of sweep row {row.name!r}" if row.name else "")
        lengths.append(length_of(label, "distill", row_settings.distill, data.train))
        if long:
            stretched = strong_scratch(row_settings, data, source).distill
            label = "the strong scratch baseline" + label[len(f"each student{long}") :]
            lengths.append(length_of(label, "distill", stretched, data.train))
    return lengths


def length_of(label: str, key: str, optim_settings: OptimSettings, num_train: int) -> StageLength:
    steps_per_epoch = max(1, num_train // optim_settings.batch_size)
    return StageLength(label, key, optim_settings.epochs, steps_per_epoch)


def strong_scratch(row_settings: RunSettings, data: SplitSizes, source) -> RunSettings:
    """The student recipe stretched to the teacher's budget (random+long): as many steps as
    the teacher had (pretraining and fine-tuning), at the students' batch size on this
    training set; the warmup is unchanged."""
    f, p, d = row_settings.finetune, row_settings.pretrain, row_settings.distill
    teacher_steps = steps_from_epochs(f.epochs, data.train // f.batch_size)
    if source is not None:
        teacher_steps += steps_from_epochs(p.epochs, source.train // p.batch_size)
    epochs = max(d.epochs, teacher_steps / (data.train // d.batch_size))
    return dataclasses.replace(row_settings, distill=dataclasses.replace(d, epochs=epochs))
