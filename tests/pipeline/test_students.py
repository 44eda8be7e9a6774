"""The starting parameters and the students of Algorithm 1 (`swin_flax.pipeline.students`):
a timm or checkpoint teacher keeps its body and gets a new head, a transferred student
starts from the teacher's first blocks, explicit cut points give the student its depths;
student.keep_blocks and student.budget read from the settings (which policy, which depths,
which blocks, the contradictions reported before anything runs, the results' labels)."""

import dataclasses
import re
import types

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax.data.sizes import SplitSizes
from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.pipeline import checks, plan, students
from swin_flax.pipeline.run import run_pipeline
from swin_flax.settings import RunSettings, StudentSettings, TeacherSettings
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


def smoke_settings(runs="transfer+kd", **student) -> RunSettings:
    settings = RunSettings.from_config(smoke_config())  # teacher swin_pico, student swin_pico_n
    student = dataclasses.replace(settings.student, **student)
    return dataclasses.replace(settings, runs=runs, student=student)


def student_stage(settings, classes=10, data=None):
    """The student stage and its results row of the settings' plan (one variant)."""
    run_plan = plan.build_plan(settings, "/w", data or SplitSizes(96, 16, classes))
    row = next(r for r in run_plan.rows if r.role == "student")
    return run_plan.stage(row.stage), row


def test_a_transferred_student_gets_the_cut_points_of_its_depths():
    settings = smoke_settings()
    spec, row = student_stage(settings)
    assert spec.model.depths == swin_flax.preset_config(settings.student.model).depths
    assert spec.blocks.cut_points is not None and len(spec.blocks.cut_points) == 2
    scratch, _ = student_stage(dataclasses.replace(settings, runs="random"), classes=7)
    assert scratch.blocks is None and scratch.model.num_classes == 7
    assert scratch.model.depths == spec.model.depths
    assert row.model == settings.student.model


def test_explicit_cut_points_cut_the_teacher_and_name_the_student_by_its_depths():
    settings = smoke_settings("transfer", cut_points=(1, 3))  # swin_pico (2, 2, 4, 2): drop 1, 2
    spec, row = student_stage(settings)
    teacher = swin_flax.preset_config(settings.teacher.model)
    assert spec.blocks.cut_points == (1, 3) and sum(spec.model.depths) == sum(teacher.depths) - 2
    assert spec.model.embed_dim == teacher.embed_dim
    assert row.model == f"{settings.teacher.model} cut to depths {list(spec.model.depths)}"


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


def test_init_labels_and_the_class_count_check(tmp_path):
    def teacher_row(**teacher):
        settings = smoke_settings()
        settings = dataclasses.replace(
            settings, teacher=dataclasses.replace(settings.teacher, **teacher)
        )
        run_plan = plan.build_plan(settings, tmp_path, SplitSizes(96, 16, 10))
        return next(r for r in run_plan.rows if r.role == "teacher")

    assert teacher_row(init="random").init == "random"
    assert teacher_row(init="timm:swin_tiny_patch4_window7_224").init == "pretrained"
    model = swin_flax.create_model("swin_pico", num_classes=10)
    swin_flax.save_checkpoint(tmp_path / "final_model", model, swin_flax.init_params(model, 0))
    assert teacher_row(finetuned=str(tmp_path / "final_model")).init == "given"
    settings = smoke_settings()
    given = dataclasses.replace(settings.teacher, finetuned=str(tmp_path / "final_model"))
    settings = dataclasses.replace(settings, teacher=given)
    with pytest.raises(UserInputError, match="has 10 classes but the data set has 100"):
        plan.build_plan(settings, tmp_path, SplitSizes(96, 16, 100))


def test_the_strong_scratch_recipe_trains_as_many_steps_as_the_teacher_had():
    from swin_flax.settings import DistillSettings, FinetuneSettings

    def strong(finetune_epochs):
        settings = dataclasses.replace(
            smoke_settings("random+long"),
            distill=DistillSettings(epochs=10, batch_size=50),
            finetune=FinetuneSettings(epochs=finetune_epochs, batch_size=50, warmup_epochs=0.1),
        )
        spec, row = student_stage(settings, data=SplitSizes(1000, 100, 10))
        return spec, row

    spec, row = strong(35.0)  # 700 teacher steps at 1000 // 50 = 20 steps per epoch
    assert (spec.kind, spec.optim.epochs, spec.steps) == ("strong_scratch", 35.0, 700)
    assert spec.optim.warmup_epochs == DistillSettings().warmup_epochs
    assert (row.model, row.baseline) == ("swin_pico_n (strong scratch)", "strong scratch")
    assert strong(0.5)[0].optim.epochs == 10  # never shorter than the students' recipe


# --- students of any teacher blocks (student.keep_blocks) ----------------------------------

PICO_ALL_BLOCKS = "0,1;0,1;0,1,2,3;0,1"  # swin_pico (2, 2, 4, 2), every block
SWIN_T = presets.preset_config("swin_t")


def kept_student(teacher, importance=None, **student):
    settings = smoke_settings("transfer", **student)
    spec, _ = student_stage(settings, classes=teacher.num_classes)
    model = swin_flax.SwinTransformer(spec.model)
    teacher_params = swin_flax.init_params(teacher, 0)
    params = students.student_params(spec, model, teacher, teacher_params, importance)
    return model, spec, teacher_params, params


@pytest.mark.slow
def test_a_student_keeping_every_teacher_block_is_the_teacher_bit_for_bit():
    teacher = swin_flax.create_model("swin_pico", num_classes=10)
    student, _, teacher_params, params = kept_student(
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
    student, spec, teacher_params, params = kept_student(teacher, keep_blocks="0,1;0,1;0,3;1")
    assert student.depths == (2, 2, 2, 1) and spec.blocks.kept.text == "0,1;0,1;0,3;1"
    assert_trees_equal(params["layers_2"]["blocks_1"], teacher_params["layers_2"]["blocks_3"])
    assert_trees_equal(params["layers_3"]["blocks_0"], teacher_params["layers_3"]["blocks_1"])
    for module in ("patch_embed", "layers_1", "norm"):
        assert_trees_equal(params[module], teacher_params[module])


def test_keep_blocks_students_are_built_from_the_teacher_and_named_by_their_policy():
    settings = smoke_settings(keep_blocks="even")  # the depths of swin_pico_n
    spec, row = student_stage(settings)
    assert (spec.model.depths, spec.blocks.kept.text) == ((2, 2, 2, 2), "0,1;0,1;0,2;0,1")
    assert row.model == "swin_pico_n (keep_blocks=even)"  # stage 2 (4x4): 0, 2 of 4 blocks
    scratch, _ = student_stage(dataclasses.replace(settings, runs="random"), classes=7)
    assert (scratch.model.depths, scratch.model.num_classes, scratch.blocks) == (
        (2, 2, 2, 2),
        7,
        None,
    )
    ranked, _ = student_stage(smoke_settings("transfer", keep_blocks="importance"))
    assert (ranked.blocks.kept, ranked.blocks.policy) == (
        None,
        "importance",
    )  # chosen once measured
    stage_2 = {(2, (j,)): cost for j, cost in enumerate([0.5, 0.1, 0.9, 0.2])}
    importance = types.SimpleNamespace(costs=lambda: stage_2)  # a BlockImportance's costs()
    kept = students.kept_blocks("importance", ranked_teacher(), (2, 2, 2, 2), "random", stage_2)
    assert kept.blocks[2] == (0, 2)  # stage 2 (4x4, one window) drops its cheapest: 1, 3
    assert importance.costs() == stage_2


def ranked_teacher():
    return swin_flax.preset_config("swin_pico").replace(num_classes=10)


# --- which blocks, from the settings -------------------------------------------------------


def settings(model="swin_n", **student) -> RunSettings:
    return RunSettings(
        teacher=TeacherSettings(model="swin_t"), student=StudentSettings(model=model, **student)
    )


@pytest.mark.parametrize(
    "student, policy",
    [
        (dict(keep_blocks="even"), "even"),
        (dict(keep_blocks="auto"), students.AUTO_POLICY),
        (dict(keep_blocks="0,1;0,1;4,5;0,1"), "list"),
        (dict(budget="params:20M"), "first"),  # a budget alone: the paper's policy
    ],
)
def test_the_policy_of_the_settings(student, policy):
    assert students.policy(StudentSettings(**student)) == policy
    assert students.uses_keep_blocks(StudentSettings(**student))
    assert not students.uses_keep_blocks(StudentSettings())


def test_auto_is_the_papers_policy_until_measured_otherwise():
    assert students.AUTO_POLICY == "first"  # results/blocks.md decides a change


@pytest.mark.parametrize(
    "student, message",
    [
        (dict(keep_blocks="even", cut_points=(6, 10)), "both choose the blocks to keep"),
        (dict(keep_blocks="0,1;0,1;4,5;0,1", budget="params:5M"), "student.budget picks"),
        (dict(keep_blocks="first", tail_init="teacher"), "use keep_blocks=first\\+teacher_tail"),
        (dict(budget="params:5M", tail_init="teacher"), "a budget without keep_blocks"),
        (dict(keep_blocks="0,1;0 1"), "stage '0 1': expected block indices"),
    ],
)
def test_contradicting_student_settings_are_problems(student, message):
    (problem,) = checks.student_problems(StudentSettings(**student))
    assert re.search(message, problem), problem


def test_the_declared_ranges_check_the_spelling():
    with pytest.raises(UserInputError) as info:
        RunSettings.from_config({"student": {"keep_blocks": "evenly", "budget": "5M"}})
    assert "student.keep_blocks must be '' (off), a policy (first, " in str(info.value)
    assert "student.budget must be '' (none), 'params:N'" in str(info.value)
    RunSettings.from_config({"student": {"keep_blocks": "0,1; 0,1", "budget": "latency:2ms"}})


def test_kept_blocks_of_a_list_a_policy_and_importance():
    listed = students.kept_blocks("0,1;0,1;4,5;0,1", SWIN_T, (2, 2, 2, 2), "random")
    assert (listed.blocks[2], listed.policy, listed.copy_tail, listed.copy_head) == (
        (4, 5),
        "list",
        True,
        False,
    )
    even = students.kept_blocks("even", SWIN_T, (2, 2, 4, 2), "teacher")
    assert (even.text, even.copy_head) == ("0,1;0,1;0,1,4,5;0,1", True)
    first = students.kept_blocks("first", SWIN_T, (2, 2, 2, 2), "random")
    assert (first.text, first.copy_tail) == ("0,1;0,1;0,1;0,1", False)
    with pytest.raises(UserInputError, match="needs the teacher's block importance"):
        students.kept_blocks("importance", SWIN_T, (2, 2, 2, 2), "random")


def test_a_written_list_is_checked_against_the_teachers_windows():
    problems = checks.student_model_problems(
        "swin_t", StudentSettings(keep_blocks="0,1;0,1;3,4;0,1"), SWIN_T, True
    )
    assert any("stage 2: block 3 has shifted windows" in p for p in problems), problems
    problems = checks.student_model_problems(
        "swin_t", StudentSettings(model="swin_s", keep_blocks="even"), SWIN_T, True
    )
    assert len(problems) == 1 and "student.model swin_s: a student of depths" in problems[0]


def test_the_depths_of_a_list_a_policy_and_a_budget():
    timing = (8, 2, "float32")
    depths = students.target_depths(StudentSettings(keep_blocks="0;0,1;0,3,4;1"), SWIN_T, timing)
    assert depths == (1, 2, 3, 1)
    assert students.target_depths(
        StudentSettings(model="swin_n", keep_blocks="even"), SWIN_T, timing
    ) == (2, 2, 2, 2)
    budgeted = StudentSettings(budget="params:1000M")  # everything fits: the teacher's depths
    assert students.target_depths(budgeted, SWIN_T, timing) == (2, 2, 6, 2)


def test_labels_name_the_blocks_or_the_policy():
    def label(depths, **student):
        return students.label(StudentSettings(model="swin_n", **student), "swin_t", depths)

    assert (
        label((2, 2, 2, 2), keep_blocks="0,1;0,1; 4,5;0,1")
        == "swin_t keeping blocks 0,1;0,1;4,5;0,1"
    )
    assert label((2, 2, 2, 2), keep_blocks="even") == "swin_n (keep_blocks=even)"
    assert label((2, 2, 2, 2), keep_blocks="auto") == "swin_n (keep_blocks=auto = first)"
    assert label((2, 2, 5, 1), budget="params:20M") == (
        "swin_t at depths [2, 2, 5, 1] (keep_blocks=first, budget params:20M)"
    )


def test_importance_is_needed_only_by_the_importance_policy():
    assert students.needs_importance(StudentSettings(keep_blocks="importance"))
    assert not students.needs_importance(StudentSettings(keep_blocks="even"))
    assert not students.needs_importance(StudentSettings())
