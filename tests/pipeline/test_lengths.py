"""Stage lengths (swin_flax/pipeline/lengths.py): what the 'stage length:' lines say, from the
data's sizes, before anything loads."""

from swin_flax.data.sizes import SplitSizes
from swin_flax.pipeline import lengths
from swin_flax.pipeline.sweeps import SweepRow, parse_variants
from swin_flax.settings import DistillSettings, FinetuneSettings, RunSettings


def settings(**sections) -> RunSettings:
    return RunSettings(
        finetune=FinetuneSettings(epochs=4, batch_size=50, warmup_epochs=1),
        distill=DistillSettings(epochs=2, batch_size=25, warmup_epochs=1),
        **sections,
    )


DATA = SplitSizes(1000, 200, 10)  # training, test images; classes


def described(runs: str, data=DATA) -> list[str]:
    s = settings()
    found = lengths.stage_lengths(s, [(SweepRow(), s)], parse_variants(runs), data, None)
    return [length.describe() for length in found]


def test_the_teacher_then_each_student_in_steps_of_their_own_batch():
    assert described("transfer+kd") == [
        "fine-tune teacher: 80 steps (4 epochs of 20)",
        "each student: 80 steps (2 epochs of 40)",
    ]


def test_a_multi_exit_model_trains_as_long_as_the_teacher_and_the_strong_baseline_as_it_had():
    assert described("exits") == [
        "fine-tune teacher: 80 steps (4 epochs of 20)",
        "each multi-exit model: 80 steps (4 epochs of 20)",
    ]
    assert described("transfer,random+long")[1:] == [
        "each student but the strong scratch baseline: 80 steps (2 epochs of 40)",
        "the strong scratch baseline: 80 steps (2 epochs of 40)",
    ]


def test_nothing_is_said_while_the_training_set_is_not_counted():
    assert described("transfer", SplitSizes(None, None, 10)) == []
