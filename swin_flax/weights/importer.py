"""Import weights from any source (timm, Microsoft, transformers; a file, a directory or a
hub repo) into a Flax model, and write them as a checkpoint directory (`convert`)."""

from __future__ import annotations

import os
from typing import NamedTuple

from swin_flax import cli
from swin_flax.errors import ConversionError, UserInputError
from swin_flax.model.config import SwinConfig
from swin_flax.model.swin import SwinTransformer
from swin_flax.weights import transformers_config
from swin_flax.weights.layouts import default_img_size, infer_architecture
from swin_flax.weights.sources import locate, read_file
from swin_flax.weights.timm import HEAD_MODES, timm_to_flax


class Imported(NamedTuple):
    model: SwinTransformer
    params: dict
    class_names: list[str] | None  # a transformers config.json's id2label, if it names them


def import_weights(
    source: str | os.PathLike,
    *,
    img_size: int | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    head: str = "keep",
    bias_resize: str = "timm",
    rng: int = 0,
    use_ema: bool = False,
) -> Imported:
    """Read `source` (see `load_state_dict`), build the matching model and convert.

    The architecture comes from the weights (`infer_architecture`) and, for a transformers
    directory or hub repo, its config.json (which must agree with them); `img_size` and
    `window_size` may be changed (bias tables are resampled), `num_classes` only together
    with head='reinit' (or num_classes=0 with head='drop').
    """
    if head not in HEAD_MODES:
        raise UserInputError(f"head must be one of {HEAD_MODES}, got {head!r}")
    weights, config_path = locate(source)
    config = None if config_path is None else transformers_config.read_config(config_path, source)
    raw = read_file(weights, use_ema=use_ema)
    arch = infer_architecture(raw)
    class_names = None
    if config is not None:
        arch, class_names = transformers_config.architecture_from_config(config, arch, source)
    ckpt_classes = arch["num_classes"]
    if head == "drop":
        if num_classes not in (None, 0):
            raise ConversionError(
                f"--drop-head/head='drop' makes a headless model; num_classes={num_classes} "
                "contradicts it (use head='reinit' for a new head)"
            )
        num_classes = 0
    elif num_classes is None:
        num_classes = ckpt_classes
    if head == "keep" and num_classes != ckpt_classes:
        have = f"a {ckpt_classes}-class head" if ckpt_classes else "no classifier head"
        raise ConversionError(
            f"{source} has {have} but num_classes={num_classes} was asked for; pass "
            "head='reinit' (CLI: --reinit-head) to replace it with a fresh "
            f"{num_classes}-class head"
            + ("" if num_classes else ", or head='drop' (CLI: --drop-head) to drop it")
        )
    if head == "reinit" and num_classes == 0:
        raise ConversionError(
            "head='reinit' needs num_classes > 0 (the checkpoint is headless: pass num_classes)"
        )
    arch.update(num_classes=num_classes)
    if window_size is not None:
        arch["window_size"] = window_size
        if img_size is None:
            arch["img_size"] = default_img_size(
                window_size, arch["patch_size"], len(arch["depths"])
            )
    if img_size is not None:
        arch["img_size"] = img_size
    try:
        model = SwinTransformer(SwinConfig(**arch))
    except ValueError as e:
        raise ConversionError(f"cannot build a Swin model for {source}: {e}") from None
    params = timm_to_flax(raw, model, head=head, rng=rng, bias_resize=bias_resize)
    return Imported(model, params, class_names if head == "keep" else None)


def convert(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    img_size: int | None = None,
    num_classes: int | None = None,
    window_size: int | None = None,
    head: str = "keep",
    overwrite: bool = False,
    bias_resize: str = "timm",
    rng: int = 0,
    use_ema: bool = False,
) -> tuple[SwinTransformer, dict]:
    """`import_weights(source, ...)`, written as an orbax checkpoint to `out_dir`.

    `load_checkpoint(out_dir)` gives the model and parameters back,
    `checkpoint.load_class_names(out_dir)` the class names of a transformers config.json.
    """
    from swin_flax.weights import checkpoint

    checkpoint.check_writable(out_dir, overwrite=overwrite)  # fail before the slow part
    model, params, class_names = import_weights(
        source,
        img_size=img_size,
        num_classes=num_classes,
        window_size=window_size,
        head=head,
        bias_resize=bias_resize,
        rng=rng,
        use_ema=use_ema,
    )
    checkpoint.save_checkpoint(out_dir, model, params, overwrite=overwrite, class_names=class_names)
    return model, params


def note_fresh_head(what: str, old_classes: int, new_classes: int) -> None:
    """One `note:` line when pretrained weights get a fresh classifier head (a new task):
    every other weight is loaded, the head starts from the model's own init."""
    had = f"a {old_classes}-class head" if old_classes else "no classifier head"
    cli.note(
        f"{what} has {had}: the {new_classes}-class head for this data set starts fresh "
        "(every other weight is loaded)"
    )


def timm_classes(state_dict) -> int:
    """The class count of a state dict's head (0 when it has none)."""
    return infer_architecture(state_dict)["num_classes"]
