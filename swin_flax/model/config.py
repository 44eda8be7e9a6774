"""`SwinConfig`: the one description of a Swin architecture.

The model (`SwinTransformer(config, dtype=..., attention=...)`), the registry's presets,
the 'model_config' item stored with checkpoints (`to_dict` / `from_dict`, the same JSON keys
as ever), weight conversion and result labels (`describe`) all use it. Run choices that do
not change the parameters' meaning (compute dtype, attention implementation) are not part
of it.

    cfg = SwinConfig(depths=(2, 2, 4, 2))          # validated on construction
    cfg.replace(num_classes=100).describe()        # 'Swin depths (2, 2, 4, 2), embed 96, ...'
    SwinConfig.from_dict(json.load(f))             # a checkpoint's model_config
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from swin_flax.errors import UserInputError

# Fields that define the architecture: saved beside checkpoints and restored from them.
CONFIG_FIELDS = (
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "num_classes",
)


def window_and_shift(resolution: int, window_size: int, shift: bool) -> tuple[int, int]:
    """timm's rule: a stage no larger than the window is one window and is never shifted."""
    if resolution <= window_size:
        return resolution, 0
    return window_size, (window_size // 2 if shift else 0)


@dataclasses.dataclass(frozen=True)
class SwinConfig:
    """A Swin Transformer v1 architecture (timm's fields and defaults: Swin-T, 1000 classes)."""

    img_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    num_classes: int = 1000

    def __post_init__(self):
        for name in ("depths", "num_heads"):  # lists (JSON) and tuples alike; hashable
            object.__setattr__(self, name, tuple(getattr(self, name)))
        raise_problems(architecture_problems(self))

    def replace(self, **changes) -> SwinConfig:
        """A copy with `changes` (validated like a new one)."""
        unknown = set(changes) - set(CONFIG_FIELDS)
        if unknown:
            raise TypeError(
                f"unknown Swin config fields {sorted(unknown)}; valid: {list(CONFIG_FIELDS)}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The JSON-serialisable form stored with checkpoints ('model_config')."""
        config = {f: getattr(self, f) for f in CONFIG_FIELDS}
        config["depths"] = list(config["depths"])
        config["num_heads"] = list(config["num_heads"])
        return config

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **overrides) -> SwinConfig:
        """The architecture of a stored `to_dict()` (older checkpoints too), with overrides."""
        unknown = set(config) - set(CONFIG_FIELDS)
        if unknown:
            raise UserInputError(
                f"unknown Swin config keys {sorted(unknown)}; valid: {CONFIG_FIELDS}"
            )
        return cls(**{**config, **overrides})

    def describe(self) -> str:
        """One human label: 'Swin depths (2, 2, 4, 2), embed 96, window 7, 224 px, 100 classes';
        heads, patch, channels, MLP ratio and qkv bias appear only where they are not the
        Swin family's (heads embed/32 doubling per stage, patch 4, RGB, ratio 4, bias)."""
        parts = [f"Swin depths {self.depths}", f"embed {self.embed_dim}"]
        standard_heads = tuple(self.embed_dim // 32 * 2**i for i in range(len(self.depths)))
        if self.num_heads != standard_heads:
            parts.append(f"heads {self.num_heads}")
        parts.append(f"window {self.window_size}")
        if self.patch_size != 4:
            parts.append(f"patch {self.patch_size}")
        parts.append(f"{self.img_size} px")
        if self.in_chans != 3:
            parts.append(f"{self.in_chans} channels")
        if self.mlp_ratio != 4.0:
            parts.append(f"mlp ratio {self.mlp_ratio}")
        if not self.qkv_bias:
            parts.append("no qkv bias")
        parts.append(f"{self.num_classes} classes" if self.num_classes else "no head")
        return ", ".join(parts)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    @property
    def stage_resolutions(self) -> tuple[int, ...]:
        first = self.img_size // self.patch_size
        return tuple(first // 2**i for i in range(len(self.depths)))


def architecture_problems(m: Any, size_name: str = "img_size") -> list[str]:
    """What timm would pad or crash on in `m` (a SwinConfig, or anything with its fields),
    each naming the fix; `size_name`: what the caller's user sets the image size with
    (e.g. 'data.image_size')."""
    problems = []
    depths, heads = tuple(m.depths), tuple(m.num_heads)
    if len(depths) != len(heads):
        problems.append(f"depths {depths} and num_heads {heads} must have the same length")
    if any(d < 1 for d in depths):
        problems.append(f"every stage needs at least one block, got depths {depths}")
    for i, h in enumerate(heads):
        dim = m.embed_dim * 2**i
        if h < 1 or dim % h:
            problems.append(f"stage {i}: dim {dim} is not divisible by num_heads {h}")
    reduction = m.patch_size * 2 ** (len(depths) - 1)
    if m.img_size % reduction:
        nearest = [
            n * reduction for n in (m.img_size // reduction, m.img_size // reduction + 1) if n > 0
        ]
        problems.append(
            f"{size_name} {m.img_size} must be divisible by patch_size * 2**(stages-1) = "
            f"{reduction}; the nearest valid "
            + (
                f"sizes are {nearest[0]} and {nearest[1]}"
                if len(nearest) == 2
                else f"size is {nearest[0]}"
            )
        )
    else:
        for i in range(len(depths)):
            res = m.img_size // m.patch_size // 2**i
            window, _ = window_and_shift(res, m.window_size, shift=False)
            if res % window:
                problems.append(
                    f"stage {i}: feature map {res}x{res} is not divisible by window_size "
                    f"{m.window_size}; choose {size_name} so that every stage resolution is a "
                    "multiple of the window (e.g. 224 for window 7, 384 for window 12)"
                )
    return problems


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise UserInputError("invalid Swin configuration:\n  - " + "\n  - ".join(problems))


__all__ = ["SwinConfig", "CONFIG_FIELDS", "window_and_shift"]
