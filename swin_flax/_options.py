"""Declarative options: a dataclass field with its default, valid range, resume rule and
help (`option`), and what is derived from such fields alone: the range check of a value,
unknown keys with a "did you mean" hint, and the listing a user reads.

`swin_flax.settings` declares the project's options with it. A leaf: imports nothing of ours
but the errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from swin_flax.errors import UserInputError


def option(
    default,
    check: Callable[[Any], bool] | None = None,
    expected: str = "",
    *,
    resumable: bool = False,
    help: str = "",
):
    """A field with its valid range (`check`, described by `expected`), whether a stage
    may resume with another value (the optimisation knobs that rescue a diverged run,
    and where the data is stored), and one line of help for `describe_options`."""
    metadata = {"check": check, "expected": expected, "resumable": resumable, "help": help}
    return dataclasses.field(default=default, metadata=metadata)


def finite(test: Callable[[float], bool]) -> Callable[[Any], bool]:
    """`test`, also rejecting NaN and infinity (NaN compares False, inf passes `> 0`)."""
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and test(v)


def one_of(*choices) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


def ordered_pair(upper: float | None = None) -> tuple[Callable[[Any], bool], str]:
    """(low, high) finite numbers with 0 < low <= high (<= upper when given)."""

    def check(v) -> bool:
        return (
            isinstance(v, tuple)
            and len(v) == 2
            and all(finite(lambda x: x > 0)(x) and not isinstance(x, bool) for x in v)
            and v[0] <= v[1] <= (math.inf if upper is None else upper)
        )

    bound = "" if upper is None else f" <= {upper:g}"
    return check, f"a pair (low, high) with 0 < low <= high{bound}"


def distinct_ints(parts) -> bool:
    """Ints >= 0, none twice: a repeated seed would train (and count) the same run twice."""
    parts = [p.strip() for p in parts if p.strip()]
    return all(p.isdigit() for p in parts) and len(set(map(int, parts))) == len(parts)


def option_fields(root, sections: Mapping[str, type]) -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, field, value) of every option of `root` (a dataclass instance whose
    fields named in `sections` are section dataclasses): its own, then each section's."""
    for prefix, obj in [("", root)] + [(f"{n}.", getattr(root, n)) for n in sections]:
        for f in dataclasses.fields(obj):
            if not (prefix == "" and f.name in sections):
                yield prefix + f.name, f, getattr(obj, f.name)


def range_problems(root, sections: Mapping[str, type]) -> list[str]:
    """'key must be EXPECTED, got VALUE' for every option whose value fails its check, and
    'key: an int was expected, got 16.5' for one of the wrong type (its range is moot)."""
    problems = []
    for key, f, value in option_fields(root, sections):
        expected = _type_expected(f, value)
        if expected:
            problems.append(f"{key}: {expected} was expected, got {value!r}")
        elif f.metadata["check"] is not None and not f.metadata["check"](value):
            problems.append(f"{key} must be {f.metadata['expected']}, got {value!r}")
    return problems


# The declared type (an annotation string under `from __future__ import annotations`) ->
# the values it accepts and how a problem names it. bool is an int in Python: refused.
_TYPES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple": (lambda v: isinstance(v, tuple), "a list or tuple"),
}


def _type_name(f) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")


def _type_expected(f, value) -> str | None:
    """What the field's declared type expects, when `value` is not of it; else None."""
    accepts, name = _TYPES.get(_type_name(f), (None, ""))
    return None if accepts is None or accepts(value) else name


def describe(root, sections: Mapping[str, type], title: str) -> str:
    """Every option with its default, valid values, resume rule and help, by section."""
    lines, section = [title], None
    for key, f, default in option_fields(root, sections):
        if key.rpartition(".")[0] != section:
            section = key.rpartition(".")[0]
            doc = (sections[section] if section else type(root)).__doc__.splitlines()[0]
            lines += ["", f"{section or 'run'}: {doc}"]
        expected = f.metadata["expected"] or f"any {type(default).__name__}"
        resume = "may change on resume" if f.metadata["resumable"] else "fixed on resume"
        lines += [f"  {key} = {default!r}  ({expected}; {resume})", f"      {f.metadata['help']}"]
    return "\n".join(lines)


def field_names(kind) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


def unknown_keys(values: dict, root_kind, sections: Mapping[str, type]) -> list[str]:
    """Keys of the nested dict `values` that name no option, each with a close match."""
    problems = []

    def check(section: dict, kind, prefix: str):
        known = field_names(kind)
        for key in section:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                problems.append(
                    f"{prefix}{key}" + (f" (did you mean {prefix}{hint[0]}?)" if hint else "")
                )
            elif prefix == "" and key in sections and isinstance(section[key], dict):
                check(section[key], sections[key], f"{key}.")

    check(values, root_kind, "")
    return problems


def normalised(kind, section: dict, sections: Mapping[str, type]) -> dict:
    """Lists from JSON or the command line become tuples, as the dataclasses declare, and
    a whole float (128.0) an int where an int is declared; any other value of the wrong
    type stays as it is, for `range_problems` to name."""
    types = {f.name: _type_name(f) for f in dataclasses.fields(kind)}

    def value(key, v):
        if isinstance(v, list):
            return tuple(v)
        if types[key] == "int" and isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return {k: value(k, v) for k, v in section.items() if k in types and k not in sections}


def build(root_kind, config, sections: Mapping[str, type], *, check_ranges: bool = True):
    """`root_kind` (with its `sections`) from an ml_collections config or a nested dict:
    every unknown key, then (with `check_ranges`) every out-of-range value, in one error."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    problems = unknown_keys(values, root_kind, sections)
    if problems:
        raise UserInputError(
            "unknown config keys: "
            + ", ".join(problems)
            + ". Valid keys are declared in swin_flax/settings.py."
        )
    built = {
        name: kind(**normalised(kind, values.get(name, {}), sections))
        for name, kind in sections.items()
    }
    top = {k: v for k, v in values.items() if k not in sections}
    root = root_kind(**normalised(root_kind, top, sections), **built)
    problems = range_problems(root, sections) if check_ranges else []
    if problems:
        raise UserInputError("invalid config:\n  - " + "\n  - ".join(problems))
    return root
