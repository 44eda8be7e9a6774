"""The paper's optimiser (Sec. IV-A, after Liu et al.'s Swin recipe): AdamW, weight decay 0.01,
linear warmup then cosine decay of the learning rate, and the helper that turns epochs into steps.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import traverse_util

from swin_flax.errors import UserInputError

Schedule = Callable[[Any], Any]

# The only leaves that get weight decay. Everything else -- LayerNorm scale/bias, Dense/Conv
# biases, and the relative position bias table -- is left alone, as timm's
# `param_groups_weight_decay` does (1-D params, biases and `no_weight_decay()` names).
DECAYED_LEAF_NAMES = frozenset({"kernel"})


def steps_from_epochs(epochs: float, steps_per_epoch: int) -> int:
    """The one conversion of a duration in epochs to optimizer steps (nearest step, half up).

    Configs state durations in epochs (paper: 60 epochs, 5 warmup); every step count in the
    code comes from here so that rounding is decided once. Fractional epochs are allowed.
    """
    if (
        isinstance(steps_per_epoch, bool)
        or not isinstance(steps_per_epoch, numbers.Integral)
        or steps_per_epoch <= 0
    ):
        raise UserInputError(f"steps_per_epoch must be a positive int, got {steps_per_epoch!r}")
    if not math.isfinite(epochs) or epochs < 0:
        raise UserInputError(f"epochs must be a finite number >= 0, got {epochs!r}")
    # floor(x + 0.5), not round(): Python rounds halves to even (round(2.5) == 2).
    return int(math.floor(epochs * int(steps_per_epoch) + 0.5))


def make_lr_schedule(
    peak_lr: float, total_steps: int, warmup_steps: int, init_lr: float = 0.0, end_lr: float = 0.0
) -> Schedule:
    """Linear warmup from `init_lr` to `peak_lr` over `warmup_steps`, then cosine to `end_lr`.

    `total_steps` includes the warmup (optax's `decay_steps`): the cosine spans
    [warmup_steps, total_steps] and the schedule stays at `end_lr` afterwards. optax evaluates it
    at the update count, 0 for the first update, so the last of `total_steps` updates uses
    schedule(total_steps - 1), just above `end_lr`.
    """
    if total_steps <= 0:
        raise UserInputError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise UserInputError(
            f"warmup_steps must be in [0, total_steps={total_steps}), got "
            f"{warmup_steps}; shorten the warmup or train longer"
        )
    if peak_lr <= 0:
        raise UserInputError(f"peak_lr must be > 0, got {peak_lr}")
    return optax.warmup_cosine_decay_schedule(
        init_value=init_lr,
        peak_value=peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=end_lr,
    )


def _leaf_name(path: tuple) -> str | None:
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    return name if isinstance(name, str) else None


def weight_decay_mask(params: Any) -> Any:
    """A pytree of bools like `params`: True for the leaves AdamW should decay.

    Only weight matrices and conv kernels (Flax leaves named 'kernel') are decayed; decaying
    norms, biases or the relative position bias table pulls them towards 0 for no regulariser
    benefit and is what the Swin/timm recipe avoids. Works on the 'params' collection or on the
    full variables dict, since only the leaf name matters.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: _leaf_name(path) in DECAYED_LEAF_NAMES, params
    )


def layer_lr_scales(params: Any, layer_decay: float) -> Any:
    """Layer-wise learning-rate decay (BEiT, timm's `param_groups_layer_decay`) for a Swin tree.

    A pytree like `params` of learning-rate multipliers: `layer_decay ** (L - layer)` with
    layer 0 the patch embedding, layers 1..B the blocks in order (a stage's downsampling
    with its first block) and L = B + 1 the final norm and the head, which train at the full
    rate. Early, general layers of a pretrained model move least. `layer_decay=1`: all 1.
    """
    flat = traverse_util.flatten_dict(params)
    stage_depths: dict[int, int] = {}
    for path in flat:
        if path[0].startswith("layers_") and len(path) > 1 and path[1].startswith("blocks_"):
            stage, block = int(path[0][7:]), int(path[1][7:])
            stage_depths[stage] = max(stage_depths.get(stage, 0), block + 1)
    first_block, count = {}, 0
    for stage in sorted(stage_depths):
        first_block[stage] = count + 1
        count += stage_depths[stage]
    last = count + 1

    def layer_of(path: tuple) -> int:
        if path[0] == "patch_embed":
            return 0
        if path[0].startswith("layers_"):
            stage = int(path[0][7:])
            if path[1].startswith("blocks_"):
                return first_block[stage] + int(path[1][7:])
            return first_block[stage]  # the downsampling at the start of the stage
        return last  # final norm, head

    return traverse_util.unflatten_dict(
        {path: float(layer_decay ** (last - layer_of(path))) for path in flat}
    )


def scale_by_tree(scales: Any) -> optax.GradientTransformation:
    """Multiply each update by its leaf of `scales` (a static pytree of floats)."""

    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int,
    weight_decay: float = 0.01,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    grad_clip_norm: float | None = None,
    end_lr: float = 0.0,
    init_lr: float = 0.0,
    lr_scales: Any = None,
) -> tuple[optax.GradientTransformation, Schedule]:
    """AdamW (decoupled decay, torch convention p -= lr * wd * p) with the warmup-cosine schedule.

    Returns `(tx, schedule)`; the schedule is returned so the train step can log the learning
    rate at `opt_state` count without reaching into optax internals. With `grad_clip_norm`, the
    gradients are clipped to that global norm before Adam sees them. `lr_scales` (a pytree of
    floats like the params, e.g. `layer_lr_scales`) scales each leaf's update: its learning
    rate and its weight decay together, as timm's per-group `lr_scale`.
    """
    if weight_decay < 0:
        raise UserInputError(f"weight_decay must be >= 0, got {weight_decay}")
    if grad_clip_norm is not None and grad_clip_norm <= 0:
        raise UserInputError(f"grad_clip_norm must be None or > 0, got {grad_clip_norm}")
    schedule = make_lr_schedule(peak_lr, total_steps, warmup_steps, init_lr=init_lr, end_lr=end_lr)
    adamw = optax.adamw(
        schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask
    )
    # The clipping stage is always there (an infinite norm when off) so that the optimizer
    # state has the same structure either way: a run that diverged can be resumed from its
    # last checkpoint with clipping switched on.
    clip = optax.clip_by_global_norm(float("inf") if grad_clip_norm is None else grad_clip_norm)
    if lr_scales is None:
        return optax.chain(clip, adamw), schedule
    return optax.chain(clip, adamw, scale_by_tree(lr_scales)), schedule
