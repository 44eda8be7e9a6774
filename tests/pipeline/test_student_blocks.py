"""student.keep_blocks and student.budget read from the settings
(swin_flax/pipeline/student_blocks.py): which policy, which depths, which blocks, the
contradictions reported before anything runs, and the results' labels."""

import re

import pytest

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.pipeline import student_blocks
from swin_flax.settings import RunSettings, StudentSettings, TeacherSettings

SWIN_T = presets.preset_config("swin_t")


def settings(model="swin_n", **student) -> RunSettings:
    return RunSettings(
        teacher=TeacherSettings(model="swin_t"), student=StudentSettings(model=model, **student)
    )


@pytest.mark.parametrize(
    "student, policy",
    [
        (dict(keep_blocks="even"), "even"),
        (dict(keep_blocks="auto"), student_blocks.AUTO_POLICY),
        (dict(keep_blocks="0,1;0,1;4,5;0,1"), "list"),
        (dict(budget="params:20M"), "first"),  # a budget alone: the paper's policy
    ],
)
def test_the_policy_of_the_settings(student, policy):
    assert student_blocks.policy(StudentSettings(**student)) == policy
    assert student_blocks.uses_keep_blocks(StudentSettings(**student))
    assert not student_blocks.uses_keep_blocks(StudentSettings())


def test_auto_is_the_papers_policy_until_measured_otherwise():
    assert student_blocks.AUTO_POLICY == "first"  # results/blocks.md decides a change


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
    (problem,) = student_blocks.settings_problems(StudentSettings(**student))
    assert re.search(message, problem), problem


def test_the_declared_ranges_check_the_spelling():
    with pytest.raises(UserInputError) as info:
        RunSettings.from_config({"student": {"keep_blocks": "evenly", "budget": "5M"}})
    assert "student.keep_blocks must be '' (off), a policy (first, " in str(info.value)
    assert "student.budget must be '' (none), 'params:N'" in str(info.value)
    RunSettings.from_config({"student": {"keep_blocks": "0,1; 0,1", "budget": "latency:2ms"}})


def test_kept_blocks_of_a_list_a_policy_and_importance():
    listed = student_blocks.kept_blocks(settings(keep_blocks="0,1;0,1;4,5;0,1"), SWIN_T)
    assert (listed.blocks[2], listed.policy, listed.copy_tail, listed.copy_head) == (
        (4, 5),
        "list",
        True,
        False,
    )
    even = student_blocks.kept_blocks(
        settings("swin_m", keep_blocks="even", tail_init="teacher"), SWIN_T
    )
    assert (even.text, even.copy_head) == ("0,1;0,1;0,1,4,5;0,1", True)
    first = student_blocks.kept_blocks(settings(keep_blocks="first"), SWIN_T)
    assert (first.text, first.copy_tail) == ("0,1;0,1;0,1;0,1", False)
    with pytest.raises(UserInputError, match="needs the teacher's block importance"):
        student_blocks.kept_blocks(settings(keep_blocks="importance"), SWIN_T)


def test_a_written_list_is_checked_against_the_teachers_windows():
    with pytest.raises(UserInputError, match="stage 2: block 3 has shifted windows"):
        student_blocks.check(settings(keep_blocks="0,1;0,1;3,4;0,1"), SWIN_T)
    with pytest.raises(UserInputError, match="student.model swin_s: a student of depths"):
        student_blocks.check(settings("swin_s", keep_blocks="even"), SWIN_T)


def test_the_depths_of_a_list_a_policy_and_a_budget():
    assert student_blocks.target_depths(settings(keep_blocks="0;0,1;0,3,4;1"), SWIN_T) == (
        1,
        2,
        3,
        1,
    )
    assert student_blocks.target_depths(settings(keep_blocks="even"), SWIN_T) == (2, 2, 2, 2)
    budgeted = settings(budget="params:1000M")  # everything fits: the teacher's depths
    assert student_blocks.target_depths(budgeted, SWIN_T) == (2, 2, 6, 2)


def test_labels_name_the_blocks_or_the_policy():
    assert (
        student_blocks.label(settings(keep_blocks="0,1;0,1; 4,5;0,1"), (2, 2, 2, 2))
        == "swin_t keeping blocks 0,1;0,1;4,5;0,1"
    )
    assert student_blocks.label(settings(keep_blocks="even"), (2, 2, 2, 2)) == (
        "swin_n (keep_blocks=even)"
    )
    assert student_blocks.label(settings(keep_blocks="auto"), (2, 2, 2, 2)) == (
        "swin_n (keep_blocks=auto = first)"
    )
    assert student_blocks.label(settings(budget="params:20M"), (2, 2, 5, 1)) == (
        "swin_t at depths [2, 2, 5, 1] (keep_blocks=first, budget params:20M)"
    )


def test_importance_is_needed_only_by_the_importance_policy():
    assert student_blocks.needs_importance(settings(keep_blocks="importance"))
    assert not student_blocks.needs_importance(settings(keep_blocks="even"))
    assert not student_blocks.needs_importance(settings())
