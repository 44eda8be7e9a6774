"""The multi-exit Swin (`swin_flax.model.exits`): the teacher's parameters, its full path,
exits that are exactly their students, and shared blocks computed once."""

import dataclasses

import jax
import numpy as np
import pytest

from swin_flax.errors import UserInputError
from swin_flax.model.exits import MultiExitSwin, full_path
from swin_flax.model.swin import SwinTransformer, init_params
from swin_flax.weights.keep_blocks import exit_student
from tests.helpers import small_swin_t_config

# A small Swin-T shape (stage 2 of depth 6, windows that shift in stages 0-1).
CONFIG = small_swin_t_config()
SWIN_N_EXIT = ((0, 1), (0, 1), (0, 1), (0, 1))
SWIN_M_EXIT = ((0, 1), (0, 1), (0, 1, 2, 3), (0, 1))


def images(n=3, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, 32, 32, 3))


def teacher_params():
    return init_params(SwinTransformer.from_config(CONFIG), 0)


def test_its_parameters_are_the_teachers_and_its_full_path_is_the_teacher():
    params = teacher_params()
    model = MultiExitSwin(CONFIG, exits=(SWIN_N_EXIT, SWIN_M_EXIT))
    own = jax.eval_shape(model.init, jax.random.PRNGKey(1), images(1))["params"]
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(params)
    logits = jax.jit(model.apply)({"params": params}, images())
    assert logits.shape == (3, 3, 5)
    teacher = jax.jit(SwinTransformer.from_config(CONFIG).apply)({"params": params}, images())
    np.testing.assert_allclose(logits[0], teacher, atol=1e-6)


@pytest.mark.parametrize(
    "blocks", [SWIN_N_EXIT, SWIN_M_EXIT, ((0, 1), (0, 1), (0, 1, 4, 5), (0, 1))]
)
def test_an_exported_exit_reproduces_the_exits_logits(blocks):
    params = teacher_params()
    model = MultiExitSwin(CONFIG, exits=(SWIN_N_EXIT, blocks))
    logits = jax.jit(model.apply)({"params": params}, images())
    student, student_params = exit_student(CONFIG, blocks, params)
    assert student.depths == tuple(len(kept) for kept in blocks)
    np.testing.assert_allclose(
        jax.jit(student.apply)({"params": student_params}, images()), logits[2], atol=1e-5
    )


def dot_products(config, exits) -> int:
    """dot_general operations in the traced forward pass (the patch embedding is a conv)."""
    model = MultiExitSwin(config, exits=exits)
    abstract = jax.eval_shape(lambda: init_params(SwinTransformer.from_config(config), 0))
    return str(jax.make_jaxpr(model.apply)({"params": abstract}, images(1))).count("dot_general")


def test_what_the_paths_share_is_computed_once():
    alone = dot_products(CONFIG, ())
    # An exit that keeps every block shares everything but the head's matmul.
    assert dot_products(CONFIG, (full_path(CONFIG),)) == alone + 1
    # Swin-N's exit repeats only what follows its skip: stage 3 (its downsampling and two
    # blocks) and the head; not the patch embedding, stages 0-1 or stage 2's first blocks.
    per_block = alone - dot_products(dataclasses.replace(CONFIG, depths=(2, 2, 5, 2)), ())
    assert dot_products(CONFIG, (SWIN_N_EXIT,)) == alone + 1 + 2 * per_block + 1


def test_an_exit_that_is_no_keep_list_of_the_model_is_refused():
    with pytest.raises(UserInputError, match="not a keep list"):
        MultiExitSwin(CONFIG, exits=(((0, 1), (0, 1), (7,), (0, 1)),))
    with pytest.raises(UserInputError, match="windows"):
        exit_student(CONFIG, ((0, 1), (1,), (0, 1), (0, 1)), teacher_params())  # stage 1 shifts
