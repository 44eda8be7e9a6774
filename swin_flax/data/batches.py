"""Index batches that feed the train and eval steps."""

from __future__ import annotations

import numpy as np

from swin_flax.errors import UserInputError


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches `epoch_batches` makes for one epoch."""
    if num_examples < 0 or batch_size < 1:
        raise UserInputError(
            f"need num_examples >= 0 and batch_size >= 1, got {num_examples}, {batch_size}"
        )
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def epoch_batches(
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_remainder: bool = True,
) -> np.ndarray:
    """(steps, batch_size) int32 example indices of one epoch, a function of (seed, epoch).

    Deriving the permutation from (seed, epoch) alone, with no carried generator state,
    lets a run resumed from a checkpoint see exactly the batches it would have seen.
    With `drop_remainder=False` the last batch is filled up with the first indices of
    the same permutation, keeping the fixed batch shape the jitted step needs.
    """
    steps = steps_per_epoch(num_examples, batch_size, drop_remainder)
    if steps == 0:
        raise UserInputError(
            f"batch_size={batch_size} exceeds the {num_examples} examples: "
            "an epoch has no full batch"
        )
    if seed < 0 or epoch < 0:
        raise UserInputError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    permutation = np.random.default_rng([seed, epoch]).permutation(num_examples)
    needed = steps * batch_size
    if needed > num_examples:
        permutation = np.concatenate([permutation, permutation[: needed - num_examples]])
    return permutation[:needed].reshape(steps, batch_size).astype(np.int32)


def eval_batches(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`(indices, mask)`, both (steps, batch_size): every example exactly once, in order.

    The last batch is padded with index 0 and mask False, so evaluation runs one compiled
    shape and metrics count only the real examples.
    """
    if num_examples < 1:
        raise UserInputError(f"need at least one example, got {num_examples}")
    steps = steps_per_epoch(num_examples, batch_size, drop_remainder=False)
    positions = np.arange(steps * batch_size)
    mask = positions < num_examples
    indices = np.where(mask, positions, 0).astype(np.int32)
    return indices.reshape(steps, batch_size), mask.reshape(steps, batch_size)
