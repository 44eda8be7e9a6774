"""swin_flax: Swin Transformers in Flax with timm parity, and the distillation framework."""

from swin_flax.architecture import SwinConfig
from swin_flax.model import (
    SwinTransformer,
    abstract_params,
    count_params,
    init_params,
    model_config,
    model_from_config,
)
from swin_flax.registry import MODEL_PRESETS, create_model, model_names, preset_config

__version__ = "0.1.0"


def load_checkpoint(path, **overrides):
    """`(model, params)` from a directory written by the converter or the trainer."""
    from swin_flax.checkpoint_io import load_checkpoint as _load

    return _load(path, **overrides)


def save_checkpoint(path, model, params):
    """Write `params` and the model configuration as one orbax checkpoint directory."""
    from swin_flax.checkpoint_io import save_checkpoint as _save

    return _save(path, model, params)
