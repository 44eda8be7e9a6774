"""Cut points and weight transfer (Algorithm 1) on small fake Swin parameter trees."""

import itertools

import numpy as np
import pytest

from swin_flax.errors import UserInputError
from swin_flax.model import presets
from swin_flax.weights import transfer

SWIN_T = (2, 2, 6, 2)
_counter = itertools.count()


def _leaf(*shape):
    """Distinct values in every leaf of every tree, so any wrong copy is visible."""
    size = int(np.prod(shape))
    return (np.arange(size, dtype=np.float32) + 1000.0 * next(_counter)).reshape(shape)


def _norm(dim):
    return {"scale": _leaf(dim), "bias": _leaf(dim)}


def _dense(d_in, d_out, bias=True):
    return {"kernel": _leaf(d_in, d_out), **({"bias": _leaf(d_out)} if bias else {})}


def fake_swin_params(depths, embed=4, num_classes=3):
    """The layout of swin_flax.model.swin.SwinTransformer's params, with tiny made-up shapes."""
    params = {
        "patch_embed": {
            "proj": {"kernel": _leaf(2, 2, 3, embed), "bias": _leaf(embed)},
            "norm": _norm(embed),
        }
    }
    for s, depth in enumerate(depths):
        dim = embed * 2**s
        stage = {}
        if s > 0:
            stage["downsample"] = {"norm": _norm(2 * dim), "reduction": _dense(2 * dim, dim, False)}
        for j in range(depth):
            stage[f"blocks_{j}"] = {
                "norm1": _norm(dim),
                "attn": {
                    "qkv": _dense(dim, 3 * dim),
                    "proj": _dense(dim, dim),
                    "relative_position_bias_table": _leaf(9, s + 1),
                },
                "norm2": _norm(dim),
                "mlp": {"fc1": _dense(dim, 2 * dim), "fc2": _dense(2 * dim, dim)},
            }
        params[f"layers_{s}"] = stage
    last = embed * 2 ** (len(depths) - 1)
    params["norm"] = _norm(last)
    if num_classes:
        params["head"] = _dense(last, num_classes)
    return params


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}/{key}" if prefix else key))
        return out
    return {prefix: tree}


def _check_copied(new, teacher, student, mapping):
    """Leaves under a student prefix in `mapping` equal the teacher's; all others are untouched."""
    new_flat, teacher_flat, student_flat = _flat(new), _flat(teacher), _flat(student)
    assert new_flat.keys() == student_flat.keys()
    copied = 0
    for path, leaf in new_flat.items():
        source = [(s, t) for s, t in mapping.items() if path == s or path.startswith(s + "/")]
        if source:
            ((s, t),) = source
            np.testing.assert_array_equal(leaf, teacher_flat[t + path[len(s) :]], err_msg=path)
            copied += 1
        else:
            assert leaf is student_flat[path], f"{path} was modified"
    return copied


# ----------------------------------------------------------------------------- cut points


@pytest.mark.parametrize(
    "p1, p2, depths",
    [
        (6, 10, (2, 2, 2, 2)),  # Swin-N
        (8, 10, (2, 2, 4, 2)),  # Swin-M
        (3, 9, (2, 1, 1, 2)),  # a cut across the stage 1 / stage 2 boundary
        (1, 3, (1, 1, 6, 2)),
        (5, 5, SWIN_T),  # p1 == p2: nothing removed
    ],
)
def test_student_depths_from_cuts(p1, p2, depths):
    assert transfer.student_depths_from_cuts(SWIN_T, p1, p2) == depths


@pytest.mark.parametrize(
    "teacher, student, cuts",
    [
        (SWIN_T, (2, 2, 2, 2), (6, 10)),
        (SWIN_T, (2, 2, 4, 2), (8, 10)),
        (SWIN_T, SWIN_T, (12, 12)),
        ((2, 2, 18, 2), (2, 2, 2, 2), (6, 22)),
        (SWIN_T, (1, 2, 6, 2), (1, 2)),
    ],
)
def test_cut_points_from_depths(teacher, student, cuts):
    assert transfer.cut_points_from_depths(teacher, student) == cuts
    assert transfer.student_depths_from_cuts(teacher, *cuts) == student


@pytest.mark.parametrize(
    "student, match",
    [
        ((2, 1, 2, 2), r"student.cut_points=\(p1, p2\)"),  # two stages differ
        ((2, 2, 8, 2), r"deeper than its teacher .*stage 2 has 8 blocks, the teacher's 6"),
        ((2, 1, 8, 2), r"^the student \(depths \(2, 1, 8, 2\)\) is deeper"),  # not cut_points
        ((2, 2, 2), "different numbers of stages"),
        ((2, 2, 0, 2), "ints >= 1"),
    ],
)
def test_cut_points_from_depths_errors(student, match):
    with pytest.raises(ValueError, match=match):
        transfer.cut_points_from_depths(SWIN_T, student)


@pytest.mark.parametrize(
    "p1, p2, match",
    [
        (6, 13, r"p2=13 is out of range.*\[0, 12\]"),
        (-1, 10, "p1=-1 is out of range"),
        (10, 6, "p1 <= p2"),
        (4, 10, r"remove every block of stage 2 \(teacher blocks \[4, 10\)\)"),
        (0, 2, "remove every block of stage 0"),
        (6.0, 10, "must be an int"),
    ],
)
def test_validate_cut_points_errors(p1, p2, match):
    with pytest.raises(ValueError, match=match):
        transfer.validate_cut_points(SWIN_T, p1, p2)


def test_validate_cut_points_accepts_edges():
    for p1, p2 in [(0, 0), (12, 12), (6, 10), (11, 12)]:
        transfer.validate_cut_points(SWIN_T, p1, p2)


# ----------------------------------------------------------------------------- the plan


def test_plan_for_swin_n():
    assert transfer.transfer_plan(SWIN_T, 6, 10) == {
        "patch_embed": "patch_embed",
        "layers_0/blocks_0": "layers_0/blocks_0",
        "layers_0/blocks_1": "layers_0/blocks_1",
        "layers_1/downsample": "layers_1/downsample",
        "layers_1/blocks_0": "layers_1/blocks_0",
        "layers_1/blocks_1": "layers_1/blocks_1",
        "layers_2/downsample": "layers_2/downsample",
        "layers_2/blocks_0": "layers_2/blocks_0",
        "layers_2/blocks_1": "layers_2/blocks_1",
    }
    tail = {
        k: v
        for k, v in transfer.transfer_plan(SWIN_T, 6, 10, "teacher").items()
        if k.startswith("layers_3") or k in ("norm", "head")
    }
    assert tail == {
        "layers_3/downsample": "layers_3/downsample",
        "layers_3/blocks_0": "layers_3/blocks_0",
        "layers_3/blocks_1": "layers_3/blocks_1",
        "norm": "norm",
        "head": "head",
    }


def test_plan_maps_tail_blocks_past_the_cut():
    plan = transfer.transfer_plan(SWIN_T, 8, 10, "teacher")  # Swin-M: stage 2 keeps 4 blocks
    assert plan["layers_2/blocks_3"] == "layers_2/blocks_3"
    assert "layers_2/blocks_4" not in plan
    plan = transfer.transfer_plan(SWIN_T, 5, 8, "teacher")  # a cut inside stage 2
    assert plan["layers_2/blocks_1"] == "layers_2/blocks_4"
    assert plan["layers_2/blocks_2"] == "layers_2/blocks_5"
    with pytest.raises(ValueError, match="tail_init"):
        transfer.transfer_plan(SWIN_T, 6, 10, "zeros")


def test_a_copied_tail_in_a_slot_of_the_other_window_kind_is_refused_with_cut_points_that_work():
    """Swin-T at 224 px, p1=5, p2=8 removes 3 blocks of stage 2 (14x14, window 7: shifted):
    teacher block 4 of that stage would become the student's (shifted) block 1."""
    swin_t = presets.preset_config("swin_t")
    assert transfer.tail_window_problems(swin_t, 5, 8)[0] == (
        "stage 2: teacher block 4 (unshifted windows) would become the student's block 1 "
        "(shifted windows)"
    )
    with pytest.raises(UserInputError) as info:
        transfer.check_cut_points(swin_t, 5, 8, "teacher")
    message = str(info.value)
    assert "\n" not in message and "1 more" in message
    assert "set cut_points=(5, 7) (an even number of blocks per stage)" in message
    transfer.check_cut_points(swin_t, 5, 7, "teacher")  # the suggestion is accepted
    transfer.check_cut_points(swin_t, 5, 8, "random")  # a random tail is any slot's kind
    for p1, p2 in ((6, 10), (8, 10)):  # the paper's Swin-N and Swin-M
        transfer.check_cut_points(swin_t, p1, p2, "teacher")
    # p1=3, p2=9 moves teacher block 5 of stage 2 into slot 0: refused at 224 px, where
    # stage 2 shifts, allowed on CIFAR's swin_t_p4 (stage 2 is 2x2, no window shifts)
    with pytest.raises(UserInputError, match="stage 2: teacher block 5 .shifted windows."):
        transfer.check_cut_points(swin_t, 3, 9, "teacher")
    transfer.check_cut_points(presets.preset_config("cifar_swin_t_p4"), 3, 9, "teacher")
    with pytest.raises(UserInputError, match="remove every block of stage 2"):
        transfer.check_cut_points(swin_t, 4, 10, "teacher")


# ----------------------------------------------------------------------------- transfer_params


def test_random_tail_copies_exactly_the_prefix():
    teacher, student = fake_swin_params(SWIN_T), fake_swin_params((2, 2, 2, 2))
    new = transfer.transfer_params(teacher, student, teacher_depths=SWIN_T, p1=6, p2=10)
    # written out, not taken from transfer_plan: the paper's prefix for Swin-N
    prefix = [
        "patch_embed",
        "layers_0/blocks_0",
        "layers_0/blocks_1",
        "layers_1/downsample",
        "layers_1/blocks_0",
        "layers_1/blocks_1",
        "layers_2/downsample",
        "layers_2/blocks_0",
        "layers_2/blocks_1",
    ]
    copied = _check_copied(new, teacher, student, {p: p for p in prefix})
    assert copied == 4 + 3 * 2 + 6 * 13  # patch_embed, 2 downsamples, 6 blocks of 13 leaves
    # the inputs are not modified
    assert (
        _flat(student)["layers_0/blocks_0/norm1/scale"][0]
        != _flat(new)["layers_0/blocks_0/norm1/scale"][0]
    )


def test_teacher_tail_swin_n():
    teacher, student = fake_swin_params(SWIN_T), fake_swin_params((2, 2, 2, 2))
    new = transfer.transfer_params(
        teacher, student, teacher_depths=SWIN_T, p1=6, p2=10, tail_init="teacher"
    )
    for path in ("layers_3/blocks_0", "layers_2/blocks_1", "layers_3/downsample", "norm", "head"):
        for leaf, value in _flat(_get(new, path)).items():
            np.testing.assert_array_equal(value, _flat(_get(teacher, path))[leaf])
    teacher_values = {v.tobytes() for v in _flat(teacher).values()}
    assert all(v.tobytes() in teacher_values for v in _flat(new).values())


def _get(tree, path):
    for key in path.split("/"):
        tree = tree[key]
    return tree


@pytest.mark.parametrize("tail_init", ["random", "teacher"])
def test_cut_across_a_stage_boundary(tail_init):
    # p1 = 3, p2 = 9: student (2, 1, 1, 2) keeps teacher blocks 0, 1 | 2 | 9 | 10, 11
    teacher, student = fake_swin_params(SWIN_T), fake_swin_params((2, 1, 1, 2))
    new = transfer.transfer_params(
        teacher, student, teacher_depths=SWIN_T, p1=3, p2=9, tail_init=tail_init
    )
    mapping = {
        "patch_embed": "patch_embed",
        "layers_0/blocks_0": "layers_0/blocks_0",
        "layers_0/blocks_1": "layers_0/blocks_1",
        "layers_1/downsample": "layers_1/downsample",
        "layers_1/blocks_0": "layers_1/blocks_0",
    }
    if tail_init == "teacher":
        mapping.update(
            {
                "layers_2/downsample": "layers_2/downsample",
                "layers_2/blocks_0": "layers_2/blocks_5",
                "layers_3/downsample": "layers_3/downsample",
                "layers_3/blocks_0": "layers_3/blocks_0",
                "layers_3/blocks_1": "layers_3/blocks_1",
                "norm": "norm",
                "head": "head",
            }
        )
    _check_copied(new, teacher, student, mapping)
    assert mapping == transfer.transfer_plan(SWIN_T, 3, 9, tail_init)


def test_head_with_other_classes_only_matters_for_teacher_tail():
    teacher = fake_swin_params(SWIN_T, num_classes=5)
    student = fake_swin_params((2, 2, 2, 2), num_classes=3)
    new = transfer.transfer_params(teacher, student, teacher_depths=SWIN_T, p1=6, p2=10)
    assert new["head"]["kernel"] is student["head"]["kernel"]
    with pytest.raises(
        ValueError,
        match=r"student head/kernel \(32, 3\) <- teacher head/kernel "
        r"\(32, 5\)",
    ):
        transfer.transfer_params(
            teacher, student, teacher_depths=SWIN_T, p1=6, p2=10, tail_init="teacher"
        )


def test_no_head_on_either_side():
    teacher = fake_swin_params(SWIN_T, num_classes=0)
    student = fake_swin_params((2, 2, 2, 2), num_classes=0)
    new = transfer.transfer_params(
        teacher, student, teacher_depths=SWIN_T, p1=6, p2=10, tail_init="teacher"
    )
    assert "head" not in new


def test_shape_problems_are_collected_and_name_paths():
    teacher = fake_swin_params(SWIN_T, embed=8)
    student = fake_swin_params((2, 2, 2, 2), embed=4)
    with pytest.raises(ValueError) as err:
        transfer.transfer_params(teacher, student, teacher_depths=SWIN_T, p1=6, p2=10)
    message = str(err.value)
    assert (
        "student patch_embed/proj/kernel (2, 2, 3, 4) <- teacher patch_embed/proj/kernel "
        "(2, 2, 3, 8)" in message
    )
    assert "layers_2/blocks_1/mlp/fc2/bias" in message
    assert message.count("shape mismatch") > 50


def test_structure_problems():
    teacher, student = fake_swin_params(SWIN_T), fake_swin_params((2, 2, 2, 2))
    del student["layers_1"]["blocks_0"]["attn"]["qkv"]["bias"]  # e.g. qkv_bias=False
    with pytest.raises(
        ValueError, match="layers_1/blocks_0/attn/qkv/bias exists only in the teacher"
    ):
        transfer.transfer_params(teacher, student, teacher_depths=SWIN_T, p1=6, p2=10)


def test_depth_and_layout_errors():
    teacher = fake_swin_params(SWIN_T)
    with pytest.raises(
        ValueError,
        match=r"student_params have depths \(2, 2, 4, 2\).*"
        r"gives \(2, 2, 2, 2\)",
    ):
        transfer.transfer_params(
            teacher, fake_swin_params((2, 2, 4, 2)), teacher_depths=SWIN_T, p1=6, p2=10
        )
    with pytest.raises(
        ValueError,
        match=r"teacher_params have depths \(2, 2, 6, 2\), but "
        r"teacher_depths says \(2, 2, 18, 2\)",
    ):
        transfer.transfer_params(
            teacher, fake_swin_params((2, 2, 2, 2)), teacher_depths=(2, 2, 18, 2), p1=6, p2=22
        )
    with pytest.raises(ValueError, match=r"variables\['params'\]"):
        transfer.transfer_params(
            {"params": teacher}, fake_swin_params((2, 2, 2, 2)), teacher_depths=SWIN_T, p1=6, p2=10
        )


def test_copied_leaves_take_the_student_dtype():
    teacher = fake_swin_params(SWIN_T)
    teacher["patch_embed"]["proj"]["kernel"] = teacher["patch_embed"]["proj"]["kernel"].astype(
        np.float64
    )
    new = transfer.transfer_params(
        teacher, fake_swin_params((2, 2, 2, 2)), teacher_depths=SWIN_T, p1=6, p2=10
    )
    assert new["patch_embed"]["proj"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(
        new["patch_embed"]["proj"]["kernel"], teacher["patch_embed"]["proj"]["kernel"]
    )


def test_depths_from_params():
    assert transfer.depths_from_params(fake_swin_params((2, 1, 3))) == (2, 1, 3)
