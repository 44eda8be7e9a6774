"""The base of every experiment config: all options with the paper's recipe as defaults.

The options, their defaults, valid ranges and what may change on resume are declared
once, in `swin_flax/settings.py`; this builds the ml_collections config from them, locked,
so that a config file or a `--config.*` override naming an undeclared key is an error
with a "did you mean" hint rather than a silently ignored setting. The ':arg' of a config
file is parsed the same way: `parse_args(arg, student=choice("n", "m"), smoke=flag())`
declares every argument with its type and default, and anything else is an error.
"""

import dataclasses
import difflib
import math
import types
from collections.abc import Callable
from typing import Any

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
    if parse_args(arg, smoke=flag()).smoke:
        apply_smoke(c)
    return c


# --- ':arg' strings: typed, declared arguments -----------------------------------------------

_FIRST = object()  # choice()'s default default: its first value


@dataclasses.dataclass(frozen=True)
class Arg:
    """One declared ':key=value' argument of a config: its default, how its text becomes a
    value (`parse` raises ValueError for a text it does not take), what it expects (in the
    error) and how the usage line shows it."""

    default: Any
    parse: Callable[[str], Any]
    expected: str
    usage: str
    choices: tuple[str, ...] = ()
    bare: bool = False  # a choice may be written alone (':swin_b' for ':teacher=swin_b')
    is_flag: bool = False


def choice(
    *values: str,
    default: Any = _FIRST,
    bare: bool = False,
    ignore_case: bool = False,
    expected: str = "",
    usage: str = "",
) -> Arg:
    """One of `values` (default: the first; None: the config decides). `bare`: a value may
    be written alone, without 'key='; `ignore_case`: 'ix' means 'IX'; `expected` and
    `usage` describe a long list of values in the error and the usage line."""

    def parse(text: str) -> str:
        for value in values:
            if text == value or (ignore_case and text.lower() == value.lower()):
                return value
        raise ValueError(text)

    return Arg(
        default=values[0] if default is _FIRST else default,
        parse=parse,
        expected=expected or "one of " + ", ".join(values),
        usage=usage or "|".join(values),
        choices=values,
        bare=bare,
    )


def text(default: str = "") -> Arg:
    """Any text, e.g. a directory; written 'key=' it is ''."""
    return Arg(default, lambda t: t, "a text", "TEXT")


def number(default: float | None = None) -> Arg:
    """A finite number (default None: the config decides)."""

    def parse(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    return Arg(default, parse, "a finite number", "NUMBER")


def flag() -> Arg:
    """Off unless written: 'smoke' alone (or smoke=true|false)."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}

    def parse(text: str) -> bool:
        if text.lower() not in words:
            raise ValueError(text)
        return words[text.lower()]

    return Arg(False, parse, "true or false (or the name alone)", "", is_flag=True)


def typed(parse: Callable[[str], Any], expected: str, usage: str, default: Any = None) -> Arg:
    """An argument of a config's own type: `parse` raises ValueError for a bad text."""
    return Arg(default, parse, expected, usage)


class ConfigArgs(types.SimpleNamespace):
    """The typed arguments of a config: `args.student`; `args.given('alpha')` tells a value
    written in ':arg' from its default."""

    def __init__(self, values: dict[str, Any], given: set[str]):
        super().__init__(**values)
        self._given = frozenset(given)

    def given(self, name: str) -> bool:
        return name in self._given


def parse_args(arg: str | None, **declared: Arg) -> ConfigArgs:
    """'smoke,alpha=0.5' -> ConfigArgs(smoke=True, alpha=0.5, the others at their defaults).

    Every argument is declared (`student=choice("n", "m")`): an unknown one (a typo such as
    'smok' must not silently start the full run), a value outside its choices or of the
    wrong type, or one given twice is an error that names the argument, what it expects
    and what was given; every problem of the string in one UserInputError."""
    if {"given", "_given"} & set(declared):
        raise TypeError("'given' is a ConfigArgs method: name the argument differently")
    values = {name: a.default for name, a in declared.items()}
    given: set[str] = set()
    problems = []
    for part in (p.strip() for p in (arg or "").split(",")):
        if not part:
            continue
        name, value, problem = _parse_one(part, declared)
        if not problem and name in given:
            problem = f"{name} is given twice"
        if problem:
            problems.append(problem)
            continue
        values[name] = value
        given.add(name)
    if problems:
        raise UserInputError(
            f"bad config argument in ':{arg}': {'; '.join(problems)}. "
            f"This config accepts: {_usage(declared)}"
        )
    return ConfigArgs(values, given)


def _parse_one(part: str, declared: dict[str, Arg]) -> tuple[str, Any, str]:
    """(name, typed value, '') of one 'key=value' or bare word, or ('', None, problem)."""
    name, sep, raw = (s.strip() for s in part.partition("="))
    if not sep:
        owners = [n for n, a in declared.items() if a.bare and name in a.choices]
        if owners:
            return owners[0], name, ""
        if name in declared and declared[name].is_flag:
            return name, True, ""
    if name not in declared:
        hint = difflib.get_close_matches(name, list(declared), n=1)
        return "", None, f"unknown config argument {name!r}" + _did_you_mean(hint)
    a = declared[name]
    if not sep:
        return "", None, f"{name} needs a value ({name}={a.usage}), got it alone"
    try:
        return name, a.parse(raw), ""
    except ValueError:
        hint = difflib.get_close_matches(raw, a.choices, n=1)
        return "", None, f"{name} must be {a.expected}, got {raw!r}" + _did_you_mean(hint)


def _did_you_mean(hint: list[str]) -> str:
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _usage(declared: dict[str, Arg]) -> str:
    return ", ".join(name if a.is_flag else f"{name}={a.usage}" for name, a in declared.items())
