"""Named Swin architectures: the paper's Swin-N/M (Table I) and the standard family.

`create_model(name, **overrides)` is the one entry point; any field of the preset's
`SwinConfig` (num_classes, img_size, depths, ...) and the module's run options (dtype,
attention) can be overridden.
`MODEL_PRESETS[name]` and `preset_config(name)` are `SwinConfig`s; `preset(name)` is the
fields the preset sets (a dict, as the benchmarks' analytic models take them).
"""

from __future__ import annotations

import dataclasses
import types

from swin_flax.errors import UserInputError
from swin_flax.model.config import CONFIG_FIELDS, SwinConfig, architecture_problems
from swin_flax.model.swin import SwinTransformer

_SMALL_HEADS = (3, 6, 12, 24)

# name -> the fields it sets; names follow the paper, timm's names are aliases below.
_PRESET_FIELDS: dict[str, dict] = {
    "swin_n": dict(embed_dim=96, depths=(2, 2, 2, 2), num_heads=_SMALL_HEADS),
    "swin_m": dict(embed_dim=96, depths=(2, 2, 4, 2), num_heads=_SMALL_HEADS),
    "swin_t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=_SMALL_HEADS),
    "swin_s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=_SMALL_HEADS),
    "swin_b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "swin_l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    # Swin-T shaped miniatures for tests and the offline demo: 32x32 images, 2-pixel
    # patches, window 4 (the last stage, 2x2, is a single unshifted window).
    "swin_pico": dict(
        img_size=32,
        patch_size=2,
        embed_dim=32,
        depths=(2, 2, 4, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.0,
    ),
    "swin_pico_n": dict(
        img_size=32,
        patch_size=2,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.0,
    ),
    # The offline demo's teacher and student: 4-pixel patches (8x8 tokens), 4x cheaper.
    "swin_micro": dict(
        img_size=32,
        patch_size=4,
        embed_dim=32,
        depths=(2, 2, 4, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.0,
    ),
    "swin_micro_n": dict(
        img_size=32,
        patch_size=4,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        drop_path_rate=0.0,
    ),
}
# CIFAR-native Swin-T / Swin-M / Swin-N: 32x32 input, window 4, Swin-T's heads at half its
# width (embed 48, head dim 16). Patch 2 (16x16 tokens) for accelerators; the _p4 variants
# (8x8 tokens) train 3.9x faster on a CPU (88 vs 339 ms per batch of 64 for the teacher,
# 2 cores; benchmarks/RESULTS.md) at the same parameter count.
for _name, _depths in (("t", (2, 2, 6, 2)), ("m", (2, 2, 4, 2)), ("n", (2, 2, 2, 2))):
    for _patch, _suffix in ((2, ""), (4, "_p4")):
        _PRESET_FIELDS[f"cifar_swin_{_name}{_suffix}"] = dict(
            img_size=32,
            patch_size=_patch,
            embed_dim=48,
            depths=_depths,
            num_heads=_SMALL_HEADS,
            window_size=4,
            drop_path_rate=0.1,
        )
for _name in ("swin_t", "swin_s", "swin_b", "swin_l"):
    _PRESET_FIELDS[f"{_name}_384"] = dict(_PRESET_FIELDS[_name], img_size=384, window_size=12)
_PRESET_FIELDS["swin_s"]["drop_path_rate"] = 0.3
_PRESET_FIELDS["swin_b"]["drop_path_rate"] = 0.5
_PRESET_FIELDS["swin_l"]["drop_path_rate"] = 0.5

# name -> architecture (SwinConfig's defaults where the preset sets nothing: 1000 classes).
MODEL_PRESETS: dict[str, SwinConfig] = {
    name: SwinConfig(**fields) for name, fields in _PRESET_FIELDS.items()
}

# timm model names (without the pretrained tag) -> our preset.
TIMM_ALIASES = {
    "swin_tiny_patch4_window7_224": "swin_t",
    "swin_small_patch4_window7_224": "swin_s",
    "swin_base_patch4_window7_224": "swin_b",
    "swin_large_patch4_window7_224": "swin_l",
    "swin_base_patch4_window12_384": "swin_b_384",
    "swin_large_patch4_window12_384": "swin_l_384",
}


def model_names() -> list[str]:
    return sorted(MODEL_PRESETS) + sorted(TIMM_ALIASES)


def _preset_name(name: str) -> str:
    """The preset of a name (timm names accepted, pretrained tags ignored)."""
    base = name.split(".")[0]
    base = TIMM_ALIASES.get(base, base)
    if base not in MODEL_PRESETS:
        raise UserInputError(f"unknown model name {name!r}; known: {', '.join(model_names())}")
    return base


def preset(name: str) -> dict:
    """The architecture fields a named model sets (timm names accepted, tags ignored)."""
    return dict(_PRESET_FIELDS[_preset_name(name)])


def preset_config(name: str) -> SwinConfig:
    """The architecture of a named model (timm names accepted, tags ignored)."""
    return MODEL_PRESETS[_preset_name(name)]


def create_model(name: str, **overrides) -> SwinTransformer:
    """`create_model('swin_m', num_classes=100, dtype=jnp.bfloat16)`."""
    run_options = set(SwinTransformer.__dataclass_fields__) - {"parent", "name", "config"}
    unknown = set(overrides) - set(CONFIG_FIELDS) - run_options
    if unknown:
        valid = sorted(set(CONFIG_FIELDS) | run_options)
        raise TypeError(f"unknown model options {sorted(unknown)}; valid: {valid}")
    architecture = {k: v for k, v in overrides.items() if k in CONFIG_FIELDS}
    options = {k: v for k, v in overrides.items() if k not in CONFIG_FIELDS}
    return SwinTransformer(SwinConfig(**{**preset(name), **architecture}), **options)


def check_image_size(name: str, image_size: int, *, model_option: str, size_option: str) -> None:
    """A preset at another input size, before anything is built: one error naming the
    options the user sets (`size_option`, e.g. 'data.image_size'), not the model's img_size."""
    # Not a SwinConfig: that would refuse itself in its own words before we could.
    fields = types.SimpleNamespace(
        **{**dataclasses.asdict(preset_config(name)), "img_size": image_size}
    )
    problems = architecture_problems(fields, size_name=size_option)
    if problems:
        raise UserInputError(
            f"{model_option} {name} cannot take {size_option}={image_size}: " + "; ".join(problems)
        )
