"""Swin's windows: a feature map cut into non-overlapping windows and put back, and the
additive attention mask that keeps shifted windows from mixing image regions (timm's
`window_partition`, `window_reverse` and `attn_mask`, as numpy constants at trace time)."""

import jax
import numpy as np

MASK_FILL = -100.0  # the value timm/Microsoft add to logits across shifted-window seams


def window_partition(x: jax.Array, window_size: int) -> jax.Array:
    """(B, H, W, C) -> (B * num_windows, window_size**2, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window_size, window_size, w // window_size, window_size, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window_size * window_size, c)


def window_reverse(windows: jax.Array, window_size: int, height: int, width: int) -> jax.Array:
    """Inverse of `window_partition`."""
    c = windows.shape[-1]
    x = windows.reshape(
        -1, height // window_size, width // window_size, window_size, window_size, c
    )
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def shifted_window_mask(resolution: int, window_size: int, shift_size: int) -> np.ndarray:
    """(num_windows, N, N) additive mask: 0 within a region, -100 between regions.

    After the cyclic shift a window can hold pixels from up to four image regions that
    were not neighbours; tokens may only attend within their own region.
    """
    region = np.zeros((1, resolution, resolution, 1), np.float32)
    bounds = ((0, -window_size), (-window_size, -shift_size), (-shift_size, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            region[:, h0:h1, w0:w1, :] = label
            label += 1
    windows = np.asarray(window_partition(region, window_size))[..., 0]  # (nW, N)
    differs = windows[:, None, :] != windows[:, :, None]
    return np.where(differs, MASK_FILL, 0.0).astype(np.float32)
