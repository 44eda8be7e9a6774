"""Window attention (`swin_flax.model.attention`): the relative position index, and the
einsum and XLA implementations giving the same numbers with and without the shift mask."""

import jax
import numpy as np
import pytest

from swin_flax.model.attention import (
    ATTENTION_IMPLEMENTATIONS,
    WindowAttention,
    relative_position_index,
)
from swin_flax.model.windows import shifted_window_mask


def test_relative_position_index_corners():
    index = relative_position_index(2)
    # tokens (0,0),(0,1),(1,0),(1,1); offset (dy+1)*3 + (dx+1)
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_the_index_covers_the_whole_bias_table_symmetrically():
    index = relative_position_index(3)
    assert index.shape == (9, 9)
    assert sorted(set(index.ravel())) == list(range(25))  # (2w-1)^2 relative offsets
    assert (np.diag(index) == 12).all()  # offset (0, 0) is the centre of the table
    np.testing.assert_array_equal(index + index.T, np.full((9, 9), 24))  # -offset mirrors


@pytest.mark.parametrize("shifted", [False, True], ids=["no_mask", "shift_mask"])
def test_xla_attention_gives_the_einsum_numbers(shifted):
    window, heads, channels, images = 4, 2, 16, 2
    mask = shifted_window_mask(resolution=8, window_size=window, shift_size=2) if shifted else None
    windows = images * (mask.shape[0] if shifted else 4)
    x = jax.random.normal(jax.random.PRNGKey(0), (windows, window * window, channels))
    einsum = WindowAttention(num_heads=heads, window_size=window)
    params = einsum.init(jax.random.PRNGKey(1), x, mask, True)
    xla = WindowAttention(num_heads=heads, window_size=window, implementation="xla")
    expected, got = (
        jax.jit(lambda p, x, m=m: m.apply(p, x, mask, True))(params, x) for m in (einsum, xla)
    )
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert "xla" in ATTENTION_IMPLEMENTATIONS and "einsum" in ATTENTION_IMPLEMENTATIONS
