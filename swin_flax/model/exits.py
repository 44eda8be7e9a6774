"""One Swin, many exits: the paper's future work (Section V), "skip connections with joint
optimization as an alternative to model duplication".

`MultiExitSwin` has exactly the parameters of the `SwinTransformer` of its config (the
teacher's shape, the same tree: a pretrained teacher's weights load as they are) and
computes several paths through them in one pass:

    path 0, the full path: every block, as the SwinTransformer computes it;
    path e (an exit): the blocks its keep list names, per stage (student.keep_blocks'
        format, swin_flax/weights/keep_blocks.py), e.g. Swin-T -> Swin-N '0,1;0,1;0,1;0,1'
        skips stage 2's blocks 2-5. Everything after the skipped blocks (later blocks,
        downsampling, the final norm, the head) is the full path's: the skip connection
        shares the tail.

What two paths have computed alike is computed once: the patch embedding and every block up
to a path's first skip run once for all the paths that share them (a prefix tree of the
paths' block sequences). An exit is therefore exactly the student its keep list describes,
sharing the teacher's parameters: `exit_student_params` copies them into a standalone
student (keep_blocks.transfer_kept with every block, the tail and the head), whose logits
equal the exit's.

Where a stage's windows shift, the k-th kept block must be of slot k's kind (an even block
for even k), as for every keep-list student, so each block keeps its own windows.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from swin_flax.errors import UserInputError
from swin_flax.model.attention import dense_init
from swin_flax.model.config import SwinConfig
from swin_flax.model.swin import LAYER_NORM_EPS, PatchEmbed, check_images, swin_stages

Blocks = tuple[tuple[int, ...], ...]  # per stage, the kept block indices (keep_blocks.Blocks)


def full_path(config: SwinConfig) -> Blocks:
    return tuple(tuple(range(depth)) for depth in config.depths)


class MultiExitSwin(nn.Module):
    """`__call__(images, train=False)` -> logits of shape (1 + len(exits), batch, classes):
    the full path's first, then each exit's, in float32."""

    config: SwinConfig
    exits: tuple[Blocks, ...]
    dtype: Any = jnp.float32
    attention: str = "einsum"

    def __post_init__(self):
        depths = tuple(self.config.depths)
        for blocks in self.exits:
            if len(blocks) != len(depths) or any(
                not kept or max(kept) >= depth or list(kept) != sorted(set(kept))
                for kept, depth in zip(blocks, depths)
            ):
                raise UserInputError(
                    f"exit {blocks} is not a keep list of a Swin of depths {depths}: one "
                    "non-empty, increasing list of block indices per stage"
                )
        super().__post_init__()

    @property
    def paths(self) -> tuple[Blocks, ...]:
        return (full_path(self.config), *self.exits)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        c = self.config
        check_images(images, c.img_size, c.in_chans)
        deterministic = not train
        x = PatchEmbed(c.patch_size, c.embed_dim, dtype=self.dtype, name="patch_embed")(
            images.astype(self.dtype)
        )
        x = nn.Dropout(c.drop_rate)(x, deterministic=deterministic)
        stages = swin_stages(c, self.dtype, self.attention)
        # Activations by the sequence of operations that made them: paths with the same
        # prefix of blocks share its activations (computed once).
        computed: dict[tuple, jax.Array] = {(): x}

        def run(history: tuple, step: tuple, fn) -> tuple:
            key = history + (step,)
            if key not in computed:
                computed[key] = fn(computed[history])
            return key

        ends = []
        for path in self.paths:
            history: tuple = ()
            for i, kept in enumerate(path):
                if i > 0:
                    history = run(
                        history,
                        ("down", i),
                        lambda v, i=i: stages[i](v, deterministic, blocks=(), entering=True),
                    )
                for j in kept:
                    history = run(
                        history,
                        (i, j),
                        lambda v, i=i, j=j: stages[i](
                            v, deterministic, blocks=(j,), entering=False
                        ),
                    )
            ends.append(computed[history])

        norm = nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=self.dtype, name="norm")
        head = (
            nn.Dense(c.num_classes, dtype=self.dtype, kernel_init=dense_init(), name="head")
            if c.num_classes > 0
            else None
        )
        dropout = nn.Dropout(c.drop_rate)
        logits = []
        for end in ends:
            pooled = dropout(norm(end).mean(axis=(1, 2)), deterministic=deterministic)
            logits.append((head(pooled) if head is not None else pooled).astype(jnp.float32))
        return jnp.stack(logits)


def exit_depths(blocks: Blocks) -> tuple[int, ...]:
    return tuple(len(kept) for kept in blocks)
