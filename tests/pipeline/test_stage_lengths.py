"""How long each stage trains (`swin_flax.pipeline.stage_lengths`): said before training,
absurd lengths refused before the data loads (or once its size gives the step count)
unless loop.max_stage_steps lifts the bound."""

import dataclasses

import pytest

from swin_flax.errors import UserInputError
from swin_flax.pipeline import stage_lengths
from swin_flax.pipeline.preflight import load_settings
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.variants import parse_variants
from swin_flax.settings import RunSettings
from tests.helpers import smoke_config


def test_absurd_epochs_are_refused_before_any_data_loads(tmp_path):
    config = smoke_config()  # tfds cifar100, not prepared: loading would fail differently
    config.finetune.epochs = 1e9
    with pytest.raises(UserInputError) as caught:
        run_pipeline(config, tmp_path)
    assert (
        "finetune.epochs 1e+09 gives at least 1,000,000,000 steps, more than "
        "loop.max_stage_steps 100,000,000; lower the epochs, or set loop.max_stage_steps "
        "higher (0: no limit) if you mean it"
    ) in str(caught.value)
    assert not (tmp_path / "teacher").exists()


def test_the_bound_is_lifted_by_an_explicit_option():
    config = smoke_config()
    config.finetune.epochs = 1e9
    config.loop.max_stage_steps = 0
    assert load_settings(config).finetune.epochs == 1e9


def settings_with(**sections) -> RunSettings:
    settings = RunSettings.from_config(smoke_config())
    return dataclasses.replace(
        settings,
        **{
            name: dataclasses.replace(getattr(settings, name), **values)
            for name, values in sections.items()
        },
    )


def test_every_stage_length_is_printed_before_training(capsys):
    settings = settings_with(
        finetune={"epochs": 3.0, "batch_size": 8}, distill={"epochs": 2.5, "batch_size": 16}
    )
    stage_lengths.check_stage_lengths(settings, parse_variants("random,transfer+kd"), 100)
    assert capsys.readouterr().out.splitlines() == [
        "stage length: fine-tune teacher: 36 steps (3 epochs of 12)",
        "stage length: each student: 15 steps (2.5 epochs of 6)",
    ]


def test_a_stage_too_long_for_the_data_at_hand_is_refused_with_its_count(capsys):
    settings = settings_with(
        finetune={"epochs": 30.0, "batch_size": 8}, loop={"max_stage_steps": 100}
    )
    with pytest.raises(UserInputError) as caught:
        stage_lengths.check_stage_lengths(settings, parse_variants("transfer"), 32)
    assert str(caught.value).startswith(
        "finetune.epochs 30 makes fine-tune teacher: 120 steps (30 epochs of 4), more than "
        "loop.max_stage_steps 100; lower the epochs"
    )
    assert capsys.readouterr().out == ""  # nothing printed for a run that does not start


def test_a_given_teacher_and_no_students_train_nothing():
    settings = settings_with(teacher={"finetuned": "/a/teacher"})
    assert [s.label for s in stage_lengths.stage_lengths(settings, parse_variants(""), 64)] == []
    assert [
        s.label for s in stage_lengths.stage_lengths(settings, parse_variants("random"), 64)
    ] == ["each student"]
