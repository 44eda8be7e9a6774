"""swin_flax: Swin Transformers in Flax with timm parity, and the distillation framework.

The package is layered; each layer imports only the ones listed before it
(`tests/test_structure.py` checks it):

    errors, _optional, _files   leaves: exceptions, optional imports, atomic writes
    model/                      SwinConfig, the Flax Swin, attention kernels, presets
    settings                    every run option once: default, range, resumable, help
    weights/                    parameter trees in and out: timm, transformers, checkpoints, transfer
    data/                       data sets as uint8 arrays, index batches, on-device augmentation
    training/                   one stage: the jitted step, the resumable loop, losses, teacher logits
    pipeline/                   the paper's Algorithm 1 over a work directory, sweeps, reports
    deploy/                     export to ONNX / LiteRT / StableHLO and run the exported files
                                (imports the leaves, model, weights and data, never training or pipeline)
"""

from swin_flax.model.config import SwinConfig
from swin_flax.model.presets import MODEL_PRESETS, create_model, model_names, preset_config
from swin_flax.model.swin import (
    SwinTransformer,
    abstract_params,
    count_params,
    init_params,
    model_config,
    model_from_config,
)

__version__ = "0.1.0"

__all__ = [
    "MODEL_PRESETS",
    "SwinConfig",
    "SwinTransformer",
    "__version__",
    "abstract_params",
    "count_params",
    "create_model",
    "init_params",
    "load_checkpoint",
    "model_config",
    "model_from_config",
    "model_names",
    "preset_config",
    "save_checkpoint",
]


def load_checkpoint(path, **overrides):
    """`(model, params)` from a directory written by the converter or the trainer."""
    from swin_flax.weights.checkpoint import load_checkpoint as _load

    return _load(path, **overrides)


def save_checkpoint(path, model, params):
    """Write `params` and the model configuration as one orbax checkpoint directory."""
    from swin_flax.weights.checkpoint import save_checkpoint as _save

    return _save(path, model, params)
