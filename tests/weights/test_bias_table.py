"""Relative position bias tables for another window (`swin_flax.weights.bias_table`):
timm's and Microsoft's resampling, in numpy."""

import numpy as np
import pytest

from swin_flax.errors import UserInputError
from swin_flax.weights import bias_table


@pytest.mark.torch
@pytest.mark.parametrize("old,new", [(7, 12), (12, 7), (7, 8), (4, 2), (2, 7)])
def test_bias_table_resize_matches_timm(old, new):
    torch = pytest.importorskip("torch")
    timm_layers = pytest.importorskip("timm.layers")
    table = np.random.RandomState(old * 100 + new).randn((2 * old - 1) ** 2, 3).astype(np.float32)
    shape = ((2 * new - 1) ** 2, 3)
    ours = bias_table.resize_relative_position_bias_table(table, new)
    ref = timm_layers.resize_rel_pos_bias_table(torch.from_numpy(table), (new, new), shape).numpy()
    assert ours.shape == shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    ours = bias_table.resize_relative_position_bias_table(table, new, method="bicubic")
    ref = timm_layers.resize_rel_pos_bias_table_simple(
        torch.from_numpy(table), (new, new), shape
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)  # values ~N(0, 1), float32 torch
    assert bias_table.resize_relative_position_bias_table(table, old) is table


def test_the_window_is_read_from_the_table_length():
    assert [bias_table.window_from_table_length(n) for n in (1, 9, 49, 169, 529)] == [
        1,
        2,
        4,
        7,
        12,
    ]
    assert bias_table.window_from_table_length(16) is None  # even side: no window
    assert bias_table.window_from_table_length(50) is None


def test_bad_tables_and_methods_are_refused():
    with pytest.raises(UserInputError, match=r"method must be one of \('timm', 'bicubic'\)"):
        bias_table.resize_relative_position_bias_table(np.zeros((49, 3)), 12, method="nearest")
    with pytest.raises(UserInputError, match=r"expected a \(\(2w-1\)\^2, heads\) table"):
        bias_table.resize_relative_position_bias_table(np.zeros((50, 3)), 12)


def test_a_constant_table_stays_constant_at_any_window():
    table = np.full((49, 2), 0.5, np.float32)
    for method in bias_table.BIAS_RESIZE_METHODS:
        resized = bias_table.resize_relative_position_bias_table(table, 12, method=method)
        assert resized.shape == (529, 2) and resized.dtype == np.float32
        np.testing.assert_allclose(resized, 0.5, atol=1e-6)
