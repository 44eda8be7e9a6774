"""The teacher's initial weights and the students of Algorithm 1
(`swin_flax.pipeline.students`): a timm or checkpoint teacher keeps its body and gets a new
head, a transferred student starts from the teacher's first blocks, explicit cut points
give the student its depths."""

import dataclasses
import types

import jax
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
def test_teacher_init_from_timm_safetensors_replaces_only_the_head(tmp_path, capsys):
    """`teacher.init = 'timm:<file>'`: converted on the fly (no torch), new head for the task."""
    from swin_flax.pipeline.students import initial_teacher_params
    from swin_flax.weights.timm import save_timm_safetensors

    imagenet_like = swin_flax.create_model("swin_pico", num_classes=1000)
    source = swin_flax.init_params(imagenet_like, 7)
    path = save_timm_safetensors(source, tmp_path / "pico.safetensors")

    task_model = swin_flax.create_model("swin_pico", num_classes=10)
    params = initial_teacher_params(f"timm:{path}", task_model, seed=0)
    assert params["head"]["kernel"].shape == (256, 10)
    assert f"note: teacher.init timm:{path} has a 1000-class head: the 10-class head" in (
        capsys.readouterr().err
    )
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
def test_a_checkpoint_teacher_keeps_its_body_and_a_new_task_gets_a_fresh_head(tmp_path, capsys):
    source = swin_flax.create_model("swin_pico", num_classes=10)
    source_params = swin_flax.init_params(source, 1)
    swin_flax.save_checkpoint(tmp_path / "pico", source, source_params)
    same = students.initial_teacher_params(str(tmp_path / "pico"), source, seed=0)
    assert_trees_equal(same, source_params)
    assert "note:" not in capsys.readouterr().err  # the same classes: nothing replaced
    task = swin_flax.create_model("swin_pico", num_classes=3)
    params = students.initial_teacher_params(str(tmp_path / "pico"), task, seed=0)
    assert params["head"]["kernel"].shape == (256, 3)
    assert capsys.readouterr().err.splitlines() == [
        f"note: teacher.init {tmp_path / 'pico'} has a 10-class head: the 3-class head for "
        "this data set starts fresh (every other weight is loaded)"
    ]
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


# --- students of any teacher blocks (student.keep_blocks) ----------------------------------

PICO_ALL_BLOCKS = "0,1;0,1;0,1,2,3;0,1"  # swin_pico (2, 2, 4, 2), every block


def kept_student(teacher, **student):
    settings = smoke_settings(**student)
    built, kept = students.build_student(
        settings, teacher, parse_variant("transfer"), np.float32, teacher.num_classes
    )
    teacher_params = swin_flax.init_params(teacher, 0)
    params = students.transferred_params(
        teacher, teacher_params, swin_flax.init_params(built, 1), kept, settings.student.tail_init
    )
    return built, kept, teacher_params, params


@pytest.mark.slow
def test_a_student_keeping_every_teacher_block_is_the_teacher_bit_for_bit():
    teacher = swin_flax.create_model("swin_pico", num_classes=10)
    student, kept, teacher_params, params = kept_student(
        teacher, keep_blocks=PICO_ALL_BLOCKS, tail_init="teacher"
    )
    assert student.config.replace(drop_path_rate=0.0) == teacher.config.replace(drop_path_rate=0.0)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(teacher_params)
    assert_trees_equal(params, teacher_params)
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        student.apply({"params": params}, images), teacher.apply({"params": teacher_params}, images)
    )
    # by default the head is the student's own: everything before it is the teacher's
    student, _, teacher_params, params = kept_student(teacher, keep_blocks=PICO_ALL_BLOCKS)
    assert not np.array_equal(params["head"]["kernel"], teacher_params["head"]["kernel"])
    _, ours = student.apply({"params": params}, images, return_features=True)
    _, theirs = teacher.apply({"params": teacher_params}, images, return_features=True)
    np.testing.assert_array_equal(ours["norm"], theirs["norm"])


@pytest.mark.slow
def test_a_keep_blocks_student_copies_the_chosen_blocks_of_a_real_teacher():
    teacher = swin_flax.create_model("swin_pico", num_classes=10)
    student, kept, teacher_params, params = kept_student(teacher, keep_blocks="0,1;0,1;0,3;1")
    assert student.depths == (2, 2, 2, 1) and kept.text == "0,1;0,1;0,3;1"
    assert_trees_equal(params["layers_2"]["blocks_1"], teacher_params["layers_2"]["blocks_3"])
    assert_trees_equal(params["layers_3"]["blocks_0"], teacher_params["layers_3"]["blocks_1"])
    for module in ("patch_embed", "layers_1", "norm"):
        assert_trees_equal(params[module], teacher_params[module])


def test_keep_blocks_students_are_built_from_the_teacher_and_named_by_their_policy():
    teacher = swin_flax.create_model("swin_pico", num_classes=10)
    settings = smoke_settings(keep_blocks="even")  # the depths of swin_pico_n
    student, kept = students.build_student(
        settings, teacher, parse_variant("transfer+kd"), np.float32, 10
    )
    assert (student.depths, kept.text) == ((2, 2, 2, 2), "0,1;0,1;0,2;0,1")  # stage 2: 4x4
    assert students.student_label(settings, student) == "swin_pico_n (keep_blocks=even)"
    scratch, nothing = students.build_student(
        settings, None, parse_variant("random"), np.float32, 7
    )
    assert (scratch.depths, scratch.num_classes, nothing) == ((2, 2, 2, 2), 7, None)
    ranked = smoke_settings(keep_blocks="importance")
    stage_2 = {(2, (j,)): cost for j, cost in enumerate([0.5, 0.1, 0.9, 0.2])}
    importance = types.SimpleNamespace(costs=lambda: stage_2)  # a BlockImportance's costs()
    _, kept = students.build_student(
        ranked, teacher, parse_variant("transfer"), np.float32, 10, importance=importance
    )
    assert kept.blocks[2] == (0, 2)  # stage 2 (4x4, one window) drops its cheapest: 1, 3
