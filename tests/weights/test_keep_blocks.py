"""Keep lists, their checks, the policies' blocks and the copy (swin_flax/weights/keep_blocks.py),
on fake Swin parameter trees: the policies give the documented blocks for Swin-T -> N and
-> M, and a keep-list student's copied blocks are the teacher's chosen ones, leaf by leaf."""

import itertools
import random

import numpy as np
import pytest
from flax import traverse_util

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.weights import keep_blocks as kb
from swin_flax.weights import transfer
from tests.weights.test_transfer import fake_swin_params

SWIN_T = (2, 2, 6, 2)
SWIN_N, SWIN_M = (2, 2, 2, 2), (2, 2, 4, 2)
SHIFTED_224 = kb.shifted_stages(presets.preset_config("swin_t"))  # stage 2: 14x14, window 7
SHIFTED_CIFAR = kb.shifted_stages(presets.preset_config("cifar_swin_t_p4"))  # stage 2: 2x2


def flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


def test_which_stages_shift_follows_timm_rule():
    assert SHIFTED_224 == (True, True, True, False)  # 56, 28, 14 > 7; 7x7 is one window
    assert SHIFTED_CIFAR == (True, False, False, False)  # 8x8 tokens, window 4
    assert kb.shifted_stages(presets.preset_config("cifar_swin_t")) == (True, True, False, False)


def test_keep_lists_are_read_and_written_per_stage():
    assert kb.parse_blocks("0,1;0,1;4,5;0,1") == ((0, 1), (0, 1), (4, 5), (0, 1))
    assert kb.parse_blocks(" 0 , 1 ;;3") == ((0, 1), (), (3,))
    assert kb.format_blocks(((0, 1), (2,), (0, 3, 4))) == "0,1;2;0,3,4"
    with pytest.raises(UserInputError, match="stage '0,a'"):
        kb.parse_blocks("0,1;0,a")


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,1;0,1;0,6;0,1", r"stage 2 has no block 6: its blocks are 0..5"),
        ("0,1;;0,1;0,1", r"stage 1 keeps no block"),
        ("0,1;0,1;0,1", r"names 3 stage\(s\), the teacher \(depths \(2, 2, 6, 2\)\) has 4"),
        ("0,1;0,1;4,1;0,1", r"stage 2 lists 4,1: .* \(write 1,4\)"),
        (
            "0,1;0,1;1,2;0,1",
            r"stage 2: block 1 has shifted windows but would be the student's block 0, whose "
            r"windows are unshifted",
        ),
    ],
)
def test_an_invalid_keep_list_is_one_clear_error(text, message):
    with pytest.raises(UserInputError, match=message) as info:
        kb.check_blocks(kb.parse_blocks(text), SWIN_T, SHIFTED_224)
    assert str(info.value).startswith(f"student.keep_blocks {text!r} cannot be cut")


def test_the_window_rule_applies_only_where_windows_shift():
    assert kb.block_problems(((0, 1), (0, 1), (1, 2), (1,)), SWIN_T, SHIFTED_CIFAR) == []
    problems = kb.block_problems(((0, 1), (0, 1), (1, 2), (1,)), SWIN_T, SHIFTED_224)
    assert len(problems) == 2  # stage 2 slots 0 and 1; stage 3 (7x7, one window) is free
    assert kb.block_problems(((0, 1), (0, 1), (0, 3, 4), (0, 1)), SWIN_T, SHIFTED_224) == []


# ----------------------------------------------------------------------------- policies


@pytest.mark.parametrize(
    "policy, student, shifted, expected",
    [
        ("first", SWIN_N, SHIFTED_224, "0,1;0,1;0,1;0,1"),
        ("first", SWIN_M, SHIFTED_224, "0,1;0,1;0,1,2,3;0,1"),
        ("even", SWIN_N, SHIFTED_224, "0,1;0,1;0,3;0,1"),
        ("even", SWIN_M, SHIFTED_224, "0,1;0,1;0,1,4,5;0,1"),  # 3 -> 4 (unshifted), 4 -> 5
        ("even", SWIN_N, SHIFTED_CIFAR, "0,1;0,1;0,3;0,1"),
        ("even", SWIN_M, SHIFTED_CIFAR, "0,1;0,1;0,1,3,4;0,1"),  # floor(k * 6 / 4)
    ],
)
def test_the_policies_give_the_documented_blocks(policy, student, shifted, expected):
    if policy == "first":
        blocks = kb.first_blocks(SWIN_T, student)
    else:
        blocks = kb.even_blocks(SWIN_T, student, shifted)
    assert kb.format_blocks(blocks) == expected


def swin_t_costs(stage2_singles, stage2_pairs=None):
    """Costs of every unit of Swin-T; stages 0, 1, 3 are never dropped in these tests."""
    costs = {(s, (j,)): 9.0 for s, d in enumerate(SWIN_T) for j in range(d)}
    costs |= {(s, (j, j + 1)): 9.0 for s, d in enumerate(SWIN_T) for j in range(d - 1)}
    costs |= {(2, (j,)): c for j, c in enumerate(stage2_singles)}
    costs |= {(2, (j, j + 1)): c for j, c in enumerate(stage2_pairs or ())}
    return costs


def test_importance_drops_the_cheapest_pairs_where_windows_shift():
    costs = swin_t_costs([1.0] * 6, stage2_pairs=[5.0, 0.1, 3.0, 0.2, 4.0])
    n = kb.important_blocks(SWIN_T, SWIN_N, SHIFTED_224, costs)
    m = kb.important_blocks(SWIN_T, SWIN_M, SHIFTED_224, costs)
    assert kb.format_blocks(n) == "0,1;0,1;0,5;0,1"  # drops pairs 1+2 and 3+4 (0.3)
    assert kb.format_blocks(m) == "0,1;0,1;0,3,4,5;0,1"  # drops pair 1+2 (0.1)
    # an odd count: pairs plus the last block left
    three = kb.important_blocks(SWIN_T, (2, 2, 3, 2), SHIFTED_224, costs)
    assert kb.format_blocks(three) == "0,1;0,1;0,3,4;0,1"  # 1+2 (0.1) and block 5 (1.0)


def test_importance_drops_the_cheapest_blocks_where_windows_do_not_shift():
    costs = swin_t_costs([5.0, 0.1, 3.0, 0.2, 4.0, 6.0])
    n = kb.important_blocks(SWIN_T, SWIN_N, SHIFTED_CIFAR, costs)
    m = kb.important_blocks(SWIN_T, SWIN_M, SHIFTED_CIFAR, costs)
    assert (kb.format_blocks(n), kb.format_blocks(m)) == ("0,1;0,1;0,5;0,1", "0,1;0,1;0,2,4,5;0,1")


def test_importance_keeps_earlier_blocks_on_ties_and_needs_its_measurements():
    costs = swin_t_costs([1.0] * 6)
    assert kb.important_blocks(SWIN_T, SWIN_N, SHIFTED_CIFAR, costs)[2] == (0, 1)
    singles_only = {key: c for key, c in costs.items() if len(key[1]) == 1}
    with pytest.raises(UserInputError, match="no measurement of stage 2 block"):
        kb.important_blocks(SWIN_T, SWIN_N, SHIFTED_224, singles_only)  # pairs are needed


def test_every_policy_gives_valid_blocks_for_any_depths():
    rng = random.Random(0)
    for teacher, shifted in itertools.product(range(1, 11), (True, False)):
        costs = {(0, (j,)): rng.random() for j in range(teacher)}
        costs |= {(0, (j, j + 1)): rng.random() for j in range(teacher - 1)}
        for depth in range(1, teacher + 1):
            for blocks in (
                kb.even_blocks((teacher,), (depth,), (shifted,)),
                kb.important_blocks((teacher,), (depth,), (shifted,), costs),
            ):
                assert len(blocks[0]) == depth
                assert kb.block_problems(blocks, (teacher,), (shifted,)) == [], (teacher, depth)


def test_policy_depths_must_fit_the_teacher():
    with pytest.raises(UserInputError, match=r"depths \(2, 2, 8, 2\) cannot keep blocks"):
        kb.first_blocks(SWIN_T, (2, 2, 8, 2))
    with pytest.raises(UserInputError, match="number of stages"):
        kb.even_blocks(SWIN_T, (2, 2, 2), SHIFTED_224)


# ----------------------------------------------------------------------------- the copy


@pytest.mark.parametrize("student, cuts", [(SWIN_N, (6, 10)), (SWIN_M, (8, 10))])
def test_first_copies_what_the_papers_cut_points_copy(student, cuts):
    kept = kb.KeptBlocks(kb.first_blocks(SWIN_T, student), "first", copy_tail=False)
    assert kb.keep_plan(SWIN_T, kept) == transfer.transfer_plan(SWIN_T, *cuts)


def test_a_keep_list_copies_everything_but_the_head():
    kept = kb.KeptBlocks(kb.parse_blocks("0,1;0,1;4,5;0,1"))
    plan = kb.keep_plan(SWIN_T, kept)
    assert plan["layers_2/blocks_0"] == "layers_2/blocks_4"
    assert plan["layers_2/blocks_1"] == "layers_2/blocks_5"
    assert {"layers_3/downsample", "norm", "patch_embed"} <= set(plan)
    assert "head" not in plan
    assert kb.keep_plan(SWIN_T, kb.KeptBlocks(kept.blocks, copy_head=True))["head"] == "head"


def test_a_keep_list_students_copied_blocks_equal_the_teachers_chosen_blocks():
    teacher, student = fake_swin_params(SWIN_T), fake_swin_params(SWIN_N)
    new = kb.transfer_kept(teacher, student, kb.KeptBlocks(kb.parse_blocks("0,1;0,1;4,5;0,1")))
    source = {"layers_2/blocks_0": "layers_2/blocks_4", "layers_2/blocks_1": "layers_2/blocks_5"}
    teacher_flat, student_flat = flat(teacher), flat(student)
    for path, leaf in flat(new).items():
        if path.startswith("head/"):
            assert leaf is student_flat[path]  # a fresh head
            continue
        module = "/".join(path.split("/")[:2])
        teacher_path = source.get(module, module) + path[len(module) :]
        np.testing.assert_array_equal(leaf, teacher_flat[teacher_path], err_msg=path)
    assert flat(new).keys() == student_flat.keys()


def test_transfer_kept_checks_the_trees_against_the_list():
    teacher = fake_swin_params(SWIN_T)
    with pytest.raises(UserInputError, match=r"student_params have depths \(2, 2, 4, 2\)"):
        kb.transfer_kept(teacher, fake_swin_params(SWIN_M), kb.KeptBlocks(((0, 1),) * 4))
    with pytest.raises(UserInputError, match="stage 3 has no block 2"):
        kb.transfer_kept(
            teacher, fake_swin_params(SWIN_N), kb.KeptBlocks(((0, 1),) * 3 + ((0, 2),))
        )


def test_first_dropped_is_the_papers_p1():
    assert kb.first_dropped(SWIN_T, kb.first_blocks(SWIN_T, SWIN_N)) == 6
    assert kb.first_dropped(SWIN_T, kb.first_blocks(SWIN_T, SWIN_T)) == 12
    assert kb.first_dropped(SWIN_T, kb.parse_blocks("0,1;1;0,1,2,3,4,5;0,1")) == 2
