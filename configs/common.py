"""The base of every experiment config: all options with the paper's recipe as defaults.

The options, their defaults, valid ranges and what may change on resume are declared
once, in `swin_flax/settings.py`; this builds the ml_collections config from them, locked,
so that a config file or a `--config.*` override naming an undeclared key is an error
with a "did you mean" hint rather than a silently ignored setting.
"""

import difflib

import ml_collections

from swin_flax.errors import UserInputError
from swin_flax.settings import default_config_dict


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(default_config_dict())
    config.lock()
    return config


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A few steps of everything on tiny settings (tests: under tfds.testing.mock_data)."""
    c.compute_dtype = "float32"
    c.data.image_size = 32
    c.teacher.model = "swin_pico"
    c.teacher.init = "random"
    c.student.model = "swin_pico_n"
    for stage in (c.finetune, c.distill):
        stage.epochs = 2
        stage.batch_size = 8
        stage.warmup_epochs = 1
    c.eval.batch_size = 16
    c.eval.throughput_batch_size = 8
    c.eval.throughput_repeats = 2
    c.loop.log_every_steps = 2
    c.loop.checkpoint_every_steps = 4
    c.loop.progress_bar = False
    return c


def full_framework_config(student: str, arg: str | None) -> ml_collections.ConfigDict:
    """Algorithm 1 end to end for one student: fine-tune, transfer, distil, evaluate."""
    c = get_base_config()
    c.student.model = student
    c.runs = "transfer+kd"
    if parse_args(arg).get("smoke"):
        apply_smoke(c)
    return c


def parse_args(arg: str | None, allowed: tuple[str, ...] = ("smoke",)) -> dict:
    """'smoke,alpha=0.5' -> {'smoke': True, 'alpha': '0.5'}; a key not in `allowed` is an
    error (a typo such as 'smok' must not silently start the full run)."""
    out = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise UserInputError(
                f"unknown config argument {key!r} in ':{arg}'"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; this config accepts: {', '.join(allowed)}"
            )
        out[key] = value.strip() if sep else True
    return out


def number_arg(args: dict, key: str, default: float) -> float:
    """A numeric ':key=value' argument, with an error that names it."""
    value = args.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"config argument {key} must be a number, got {value!r}") from None
