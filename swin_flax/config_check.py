"""Reject config keys that the base config does not declare (a typo must not be ignored)."""

from __future__ import annotations

import difflib

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
