"""The teacher's initial weights and the students of Algorithm 1
(`swin_flax.pipeline.students`): a timm or checkpoint teacher keeps its body and gets a new
head, a transferred student starts from the teacher's first blocks, explicit cut points
give the student its depths."""

import dataclasses

import numpy as np
import pytest

import swin_flax
from swin_flax.errors import UserInputError
from swin_flax.pipeline import students
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.variants import parse_variant
from swin_flax.settings import RunSettings
from tests.helpers import assert_trees_equal, smoke_config


@pytest.mark.slow
def test_transferred_student_starts_from_teacher_prefix(tmp_path, mock_tfds):
    """With a zero learning rate the student keeps exactly its transferred initialisation."""
    tfds = mock_tfds
    config = smoke_config()
    config.runs = "transfer"
    config.evaluate_teacher = False
    config.distill.peak_lr = 1e-30  # updates below float32 resolution: the student keeps its init
    with tfds.testing.mock_data(num_examples=32):
        run_pipeline(config, tmp_path)
    _, teacher = swin_flax.load_checkpoint(tmp_path / "teacher" / "final_model")
    _, student = swin_flax.load_checkpoint(tmp_path / "student_transfer" / "final_model")
    for path in ("patch_embed", "layers_0", "layers_1"):
        assert_trees_equal(teacher[path], student[path])
    assert_trees_equal(teacher["layers_2"]["blocks_1"], student["layers_2"]["blocks_1"])
    assert "blocks_2" not in student["layers_2"]
    assert not np.allclose(
        teacher["layers_3"]["blocks_0"]["mlp"]["fc1"]["kernel"],
        student["layers_3"]["blocks_0"]["mlp"]["fc1"]["kernel"],
    )


@pytest.mark.slow
def test_teacher_init_from_timm_safetensors_replaces_only_the_head(tmp_path):
    """`teacher.init = 'timm:<file>'`: converted on the fly (no torch), new head for the task."""
    from swin_flax.pipeline.students import initial_teacher_params
    from swin_flax.weights.timm import save_timm_safetensors

    imagenet_like = swin_flax.create_model("swin_pico", num_classes=1000)
    source = swin_flax.init_params(imagenet_like, 7)
    path = save_timm_safetensors(source, tmp_path / "pico.safetensors")

    task_model = swin_flax.create_model("swin_pico", num_classes=10)
    params = initial_teacher_params(f"timm:{path}", task_model, seed=0)
    assert params["head"]["kernel"].shape == (256, 10)
    source_body = {k: v for k, v in source.items() if k != "head"}
    assert_trees_equal(source_body, {k: v for k, v in params.items() if k != "head"})


def smoke_settings(**student) -> RunSettings:
    settings = RunSettings.from_config(smoke_config())  # teacher swin_pico, student swin_pico_n
    return dataclasses.replace(settings, student=dataclasses.replace(settings.student, **student))


def test_a_transferred_student_gets_the_cut_points_of_its_depths():
    settings = smoke_settings()
    teacher = swin_flax.create_model(settings.teacher.model, num_classes=10)
    student, cuts = students.build_student(
        settings, teacher, parse_variant("transfer+kd"), np.float32, 10
    )
    assert student.depths == swin_flax.preset_config(settings.student.model).depths
    assert cuts is not None and len(cuts) == 2
    scratch, no_cuts = students.build_student(
        settings, None, parse_variant("random"), np.float32, 7
    )
    assert no_cuts is None and scratch.num_classes == 7 and scratch.depths == student.depths
    assert students.student_label(settings, student) == settings.student.model


def test_explicit_cut_points_cut_the_teacher_and_name_the_student_by_its_depths():
    settings = smoke_settings(cut_points=(1, 3))  # swin_pico (2, 2, 4, 2): drop blocks 1, 2
    teacher = swin_flax.create_model(settings.teacher.model, num_classes=10)
    student, cuts = students.build_student(
        settings, teacher, parse_variant("transfer"), np.float32, 10
    )
    assert cuts == (1, 3) and sum(student.depths) == sum(teacher.depths) - 2
    assert student.embed_dim == teacher.embed_dim
    assert students.student_label(settings, student) == (
        f"{settings.teacher.model} cut to depths {list(student.depths)}"
    )


@pytest.mark.slow
def test_a_checkpoint_teacher_keeps_its_body_and_a_new_task_gets_a_fresh_head(tmp_path):
    source = swin_flax.create_model("swin_pico", num_classes=10)
    source_params = swin_flax.init_params(source, 1)
    swin_flax.save_checkpoint(tmp_path / "pico", source, source_params)
    same = students.initial_teacher_params(str(tmp_path / "pico"), source, seed=0)
    assert_trees_equal(same, source_params)
    task = swin_flax.create_model("swin_pico", num_classes=3)
    params = students.initial_teacher_params(str(tmp_path / "pico"), task, seed=0)
    assert params["head"]["kernel"].shape == (256, 3)
    assert_trees_equal(params["layers_3"], source_params["layers_3"])
    other = swin_flax.create_model("swin_micro", num_classes=10)
    with pytest.raises(UserInputError, match="different architecture than teacher.model"):
        students.initial_teacher_params(str(tmp_path / "pico"), other, seed=0)


def test_init_labels_and_the_class_count_check():
    assert students.init_label("random") == "random"
    assert students.init_label("timm:swin_tiny_patch4_window7_224") == "pretrained"
    model = swin_flax.create_model("swin_pico", num_classes=10)
    students.check_num_classes(model, 10, "teacher/final_model")
    with pytest.raises(UserInputError, match="has 10 classes but the data set has 100"):
        students.check_num_classes(model, 100, "teacher/final_model")


def test_the_strong_scratch_recipe_trains_as_many_steps_as_the_teacher_had():
    from swin_flax.pipeline.students import strong_scratch_settings
    from swin_flax.settings import DistillSettings, RunSettings

    settings = RunSettings(distill=DistillSettings(epochs=10, batch_size=50))
    long = strong_scratch_settings(settings, train_size=1000, teacher_steps=700)
    assert long.distill.epochs == 35.0  # 700 steps at 1000 // 50 = 20 steps per epoch
    assert long.distill.warmup_epochs == settings.distill.warmup_epochs
    assert strong_scratch_settings(settings, 1000, 10).distill.epochs == 10  # never shorter
