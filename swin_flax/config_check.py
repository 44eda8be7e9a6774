"""Config checks that need no data: undeclared keys (a typo must not be ignored) and values
out of range, reported before the data loads and hours go into the teacher."""

from __future__ import annotations

import difflib
import math

from swin_flax.errors import UserInputError


def unknown_keys(config: dict, template: dict, prefix: str = "") -> list[str]:
    """Dotted paths present in `config` but not in `template`, with close-match hints."""
    problems = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key not in template:
            hint = difflib.get_close_matches(key, list(template), n=1)
            problems.append(path + (f" (did you mean {prefix}{hint[0]}?)" if hint else ""))
        elif isinstance(value, dict) and isinstance(template[key], dict):
            problems.extend(unknown_keys(value, template[key], prefix=f"{path}."))
    return problems


def check_config_keys(config: dict, template: dict) -> None:
    problems = unknown_keys(config, template)
    if problems:
        raise UserInputError("unknown config keys: " + ", ".join(problems)
                             + ". Valid keys are declared in configs/common.py.")


def _finite(test):
    """A rule that also rejects NaN and infinity (NaN compares False, inf passes `> 0`)."""
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and test(v)


def _stage_rules(stage: str) -> tuple:
    """Optimisation settings of one training stage: wrong ones otherwise show up only as a
    NaN loss, after the teacher's whole fine-tuning for the student's stage."""
    return (
        (f"{stage}.peak_lr", _finite(lambda v: v > 0), "a finite learning rate > 0"),
        (f"{stage}.end_lr", _finite(lambda v: v >= 0), "a finite learning rate >= 0"),
        (f"{stage}.weight_decay", _finite(lambda v: v >= 0), "a finite number >= 0"),
        (f"{stage}.grad_clip_norm", _finite(lambda v: v >= 0), "0 (no clipping) or a norm > 0"),
        (f"{stage}.label_smoothing", _finite(lambda v: 0 <= v < 1), "a fraction in [0, 1)"),
    )


# (dotted key, test, what is expected); the test gets the value.
VALUE_RULES = (
    ("data.crop_padding", lambda v: v >= 0, "an int >= 0 (pixels of zero padding)"),
    ("data.split_seed", lambda v: v >= 0, "an int >= 0"),
    ("data.stored_size", lambda v: v >= 0, "0 (keep the stored size) or a side in pixels"),
    ("data.image_size", lambda v: v > 0, "a side in pixels > 0"),
    ("data.validation_fraction", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("eval.batch_size", lambda v: v >= 1, "an int >= 1"),
    ("eval.throughput_batch_size", lambda v: v >= 0, "0 (no throughput) or a batch size"),
    ("eval.throughput_repeats", lambda v: v >= 1, "an int >= 1"),
    ("finetune.epochs", _finite(lambda v: v > 0), "a finite number of epochs > 0"),
    ("distill.epochs", _finite(lambda v: v > 0), "a finite number of epochs > 0"),
    ("finetune.batch_size", lambda v: v >= 1, "an int >= 1"),
    ("distill.batch_size", lambda v: v >= 1, "an int >= 1"),
    ("finetune.warmup_epochs", lambda v: v >= 0, "a number of epochs >= 0"),
    ("distill.warmup_epochs", lambda v: v >= 0, "a number of epochs >= 0"),
    *_stage_rules("finetune"),
    *_stage_rules("distill"),
    ("distill.temperature", _finite(lambda v: v > 0), "a finite temperature > 0"),
    ("distill.alpha", _finite(lambda v: 0 <= v <= 1), "a weight in [0, 1]"),
    ("distill.alpha_start", _finite(lambda v: 0 <= v <= 1), "a weight in [0, 1]"),
    ("distill.alpha_end", _finite(lambda v: 0 <= v <= 1), "a weight in [0, 1]"),
    ("distill.w_d", _finite(lambda v: v >= 0), "a finite weight >= 0"),
    ("distill.w_s", _finite(lambda v: v >= 0), "a finite weight >= 0"),
)


def check_config_values(config) -> None:
    """Every out-of-range value at once, each with what was expected."""
    problems = []
    for key, test, expected in VALUE_RULES:
        value = config
        for part in key.split("."):
            value = value[part]
        if not test(value):
            problems.append(f"{key} must be {expected}, got {value!r}")
    for stage in ("finetune", "distill"):
        warmup, epochs = config[stage].warmup_epochs, config[stage].epochs
        if warmup >= epochs > 0:
            problems.append(f"{stage}.warmup_epochs ({warmup}) must be shorter than "
                            f"{stage}.epochs ({epochs}): the cosine decay needs steps after it")
    cut_points = tuple(config.student.cut_points or ())
    if cut_points and len(cut_points) != 2:
        problems.append(f"student.cut_points must be empty (derived from student.model) or two "
                        f"block indices (p1, p2), got {cut_points}")
    if config.data.source == "image_folder" and not config.data.root:
        problems.append("data.root is empty: data.source='image_folder' reads "
                        "data.root/<split>/<class>/*.jpg")
    if problems:
        raise UserInputError("invalid config:\n  - " + "\n  - ".join(problems))
