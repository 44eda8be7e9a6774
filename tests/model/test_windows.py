"""Swin's windows (swin_flax/model/windows.py): cut and merge are inverse, the shifted mask
keeps regions apart."""

import numpy as np

from swin_flax.model.windows import shifted_window_mask, window_partition, window_reverse


def test_window_partition_is_row_major_and_window_reverse_undoes_it():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    windows = np.asarray(window_partition(x, 2))
    assert windows.shape == (2 * 2 * 3, 4, 3)
    np.testing.assert_array_equal(windows[1], x[0, 0:2, 2:4].reshape(4, 3))  # 2nd window: right
    np.testing.assert_array_equal(windows[3], x[0, 2:4, 0:2].reshape(4, 3))  # 4th: next row
    np.testing.assert_array_equal(np.asarray(window_reverse(windows, 2, 4, 6)), x)


def test_shifted_window_mask_separates_regions():
    mask = shifted_window_mask(resolution=4, window_size=2, shift_size=1)
    assert mask.shape == (4, 4, 4)
    assert np.all(mask[0] == 0)  # the top-left window holds one region only
    # the bottom-right window holds four regions: only the diagonal is unmasked
    np.testing.assert_array_equal(mask[3] == 0, np.eye(4, dtype=bool))
    assert set(np.unique(mask)) == {0.0, -100.0}
