"""Relative position bias tables of window attention, resampled for another window size.

A block's table has one row per relative offset inside a window, (2w-1)^2 rows, and one
column per head (`SwinTransformer`'s `relative_position_bias_table`). Fine-tuning at
another window (a window-7 checkpoint into a window-12 model) resamples each head's
(2w-1) x (2w-1) grid: `resize_relative_position_bias_table`. numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from swin_flax.errors import UserInputError

BIAS_RESIZE_METHODS = ("timm", "bicubic")


def window_from_table_length(length: int) -> int | None:
    """w of a (2w-1)^2-row table, None if `length` is not such a count."""
    side = math.isqrt(length)
    if side * side != length or side % 2 == 0:
        return None
    return (side + 1) // 2


def _linear_weights(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(len(dst), len(src)) piecewise-linear interpolation matrix, constant beyond the ends."""
    eye = np.eye(len(src))
    return np.stack([np.interp(dst, src, eye[k]) for k in range(len(src))], axis=1)


def _geometric_offsets(src_side: int, dst_side: int) -> np.ndarray:
    """Source-table positions spread geometrically so its outer edge lands near the target's.

    The BEiT/timm scheme: offsets 0, ±1, ±(1+q), ±(1+q+q^2), ... with the ratio q in
    [1.01, 1.5] found by bisection so that the sum of src_side//2 terms is dst_side//2.
    """
    half = src_side // 2
    lo, hi = 1.01, 1.5
    q = (lo + hi) / 2.0
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if (1.0 - q**half) / (1.0 - q) > dst_side // 2:
            hi = q
        else:
            lo = q
    steps = np.cumsum([0.0] + [q**k for k in range(half)])  # 0, 1, 1+q, ...
    return np.concatenate([-steps[:0:-1], steps])


def _cubic_weights(src_len: int, dst_len: int, a: float = -0.75) -> np.ndarray:
    """(dst_len, src_len) matrix of torch's bicubic resize (align_corners=False, edge clamp)."""
    weights = np.zeros((dst_len, src_len))
    scale = src_len / dst_len
    for i in range(dst_len):
        x = (i + 0.5) * scale - 0.5
        x0 = math.floor(x)
        t = x - x0
        # Keys' cubic convolution kernel at distances 1+t, t, 1-t, 2-t.
        taps = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        )
        for k, w in enumerate(taps):
            weights[i, min(max(x0 - 1 + k, 0), src_len - 1)] += w
    return weights


def resize_relative_position_bias_table(
    table: np.ndarray, window_size: int, *, method: str = "timm"
) -> np.ndarray:
    """Resample a ((2w-1)^2, heads) bias table to `window_size`, each head's grid separately.

    method="timm": what timm's Swin checkpoint loader does (`resize_rel_pos_bias_table`,
    from BEiT): source positions spread geometrically, linear interpolation.
    method="bicubic": the original Microsoft Swin fine-tuning code (and timm's
    `resize_rel_pos_bias_table_simple`): torch bicubic, align_corners=False.
    Both are numpy; no PyTorch needed.
    """
    if method not in BIAS_RESIZE_METHODS:
        raise UserInputError(f"method must be one of {BIAS_RESIZE_METHODS}, got {method!r}")
    table = np.asarray(table)
    old_window = window_from_table_length(table.shape[0]) if table.ndim == 2 else None
    if old_window is None:
        raise UserInputError(f"expected a ((2w-1)^2, heads) table, got shape {table.shape}")
    if old_window == window_size:
        return table
    src, dst = 2 * old_window - 1, 2 * window_size - 1
    if method == "timm":
        target = np.arange(-(dst // 2), dst // 2 + 1, dtype=np.float64)
        weights = _linear_weights(_geometric_offsets(src, dst), target)
    else:
        weights = _cubic_weights(src, dst)
    grids = table.astype(np.float64).T.reshape(-1, src, src)  # (heads, dy, dx)
    resized = np.einsum("ya,hab,xb->hyx", weights, grids, weights)
    return resized.reshape(-1, dst * dst).T.astype(table.dtype)


__all__ = ["BIAS_RESIZE_METHODS", "resize_relative_position_bias_table", "window_from_table_length"]
