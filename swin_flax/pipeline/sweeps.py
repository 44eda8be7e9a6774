"""What a config asks to compare: the student variants (`runs`) and the rows of a sweep
(`sweep`), parsed. The plan (plan.py) makes stages of them.

A variant is written `INIT` or `INIT+kd`, INIT in {random, transfer}:
    random       trained from scratch on hard labels (Table II baseline)
    random+kd    from scratch, distilled from the teacher (Tables IV-VII)
    transfer     first blocks copied from the teacher, hard labels only (Table VIII)
    transfer+kd  the full framework (Algorithm 1, Table IX last rows)
and `exits`, one model with many exits (the paper's Section V): a Swin of the teacher's
shape, trained from the teacher's start with the teacher's recipe, whose full path learns
from the labels while the row's student, a path through its blocks, learns from the labels
and the full path (training/multi_exit.py); the exit is exported as that student. Also
`random+long`, the strong scratch baseline: from scratch on hard labels for as many
optimizer steps as the teacher had (its pretraining and fine-tuning together), so that a
gain over scratch is not just the teacher's longer training showing through.

A sweep is the rows of one paper table in one work directory:
    sweep = 'alpha=0,0.25,0.5,0.75'                          one key, its values
    sweep = 'alpha_start=0,alpha_end=0.5; alpha_start=0.5,alpha_end=1'   rows of several keys
    sweep = 'student.model=swin_m,alpha=0; student.model=swin_n,alpha=0'
A bare key is a `distill` option; `student.<key>` changes the student. Every row trains
each variant (per seed) against the one teacher, in its own stage directory
(`student_random_kd_alpha0.25`); a stage two rows resolve to alike trains once. The
results get one table in the paper's layout (results.py, in sweep.md and summary.md).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from swin_flax.errors import UserInputError
from swin_flax.settings import SECTIONS

INITS = ("random", "transfer")
SWEPT_SECTIONS = ("distill", "student")
NOT_SWEPT = {"student.cut_points"}  # tuples: not expressible as one value


@dataclasses.dataclass(frozen=True)
class StudentVariant:
    init: str
    distill: bool
    long: bool = False  # random+long: the teacher's training budget, labels only

    @property
    def transfer(self) -> bool:
        return self.init == "transfer"

    @property
    def exits(self) -> bool:
        return self.init == "exits"

    @property
    def name(self) -> str:
        return self.init + ("_kd" if self.distill else "") + ("_long" if self.long else "")

    @property
    def spelling(self) -> str:
        """As written in `runs`: random, random+kd, transfer, transfer+kd, random+long."""
        return self.init + ("+kd" if self.distill else "") + ("+long" if self.long else "")


def parse_variant(text: str) -> StudentVariant:
    init, _, suffix = text.strip().partition("+")
    if (init, suffix) == ("random", "long"):
        return StudentVariant(init="random", distill=False, long=True)
    if (init, suffix) == ("exits", ""):
        return StudentVariant(init="exits", distill=False)
    if init not in INITS or suffix not in ("", "kd"):
        raise UserInputError(
            f"unknown student variant {text!r}; expected one of random, random+kd, transfer, "
            "transfer+kd, random+long, exits"
        )
    return StudentVariant(init=init, distill=suffix == "kd")


def parse_variants(text: str) -> list[StudentVariant]:
    """'transfer+kd,random' -> variants in order; '' -> none (teacher only)."""
    variants = [parse_variant(part) for part in text.split(",") if part.strip()]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserInputError(f"student variants repeat: {text!r}")
    return variants


@dataclasses.dataclass(frozen=True)
class SweepRow:
    overrides: tuple[tuple[str, Any], ...] = ()  # ('distill.alpha', 0.25), ...
    name: str = ""  # stage-name suffix: 'alpha0.25'
    column: str = ""  # the distill part, a column of the table: 'alpha=0.25'

    def sections(self) -> dict[str, dict[str, Any]]:
        """{'distill': {'alpha': 0.25}, ...}: the values this row sets, per section."""
        values: dict[str, dict[str, Any]] = {}
        for key, value in self.overrides:
            section, field = key.split(".")
            values.setdefault(section, {})[field] = value
        return values


def split_rows(text: str) -> list[list[tuple[str, str]]]:
    """The sweep's rows as (key, value-text) pairs, keys as written."""
    text = text.strip()
    if not text:
        return []
    if ";" not in text and text.count("=") == 1:  # key=v1,v2,...
        key, values = text.split("=")
        return [[(key.strip(), v.strip())] for v in values.split(",") if v.strip()]
    rows = []
    for part in text.split(";"):
        if not part.strip():
            continue
        row = []
        for assignment in part.split(","):
            key, sep, value = assignment.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UserInputError(
                    f"sweep row {part.strip()!r}: expected key=value pairs "
                    f"separated by ',', got {assignment.strip()!r}"
                )
            row.append((key.strip(), value.strip()))
        rows.append(row)
    return rows


def sweep_rows(text: str) -> list[SweepRow]:
    """The typed rows of a `sweep` text; [SweepRow()] (the settings as they are) for ''.
    Every problem of the text is reported in one error (the values' ranges are checked
    with the rest of each row's settings, in plan.py)."""
    parsed = split_rows(text)
    if not parsed:
        return [SweepRow()]
    problems: list[str] = []
    typed_rows = []
    for row in parsed:
        typed = []
        for key, value_text in row:
            full = key if "." in key else f"distill.{key}"
            field = _field(full, problems)
            if field is None:
                continue
            try:
                typed.append((full, _convert(field, value_text)))
            except ValueError:
                problems.append(f"sweep value {key}={value_text!r} is not a {field.type}")
        typed_rows.append(tuple(typed))
    varying = [
        key
        for key in dict.fromkeys(k for row in typed_rows for k, _ in row)
        if len(typed_rows) == 1 or len({dict(r).get(key) for r in typed_rows}) > 1
    ]
    rows = []
    for typed in typed_rows:
        shown = [(k, v) for k, v in typed if k in varying] or list(typed)
        name = "_".join(
            _text(v) if k == "student.model" else f"{_short(k)}{_text(v)}" for k, v in shown
        ).replace(" ", "-")  # a directory name: feature_weights0-0-1-1
        column = ", ".join(f"{_short(k)}={_text(v)}" for k, v in shown if k.startswith("distill."))
        rows.append(SweepRow(overrides=typed, name=name, column=column))
    names = [r.name for r in rows]
    if not problems and len(set(names)) != len(names):
        problems.append(f"sweep rows repeat: {text!r}")
    if problems:
        raise UserInputError("invalid sweep:\n  - " + "\n  - ".join(problems))
    return rows


def _field(full: str, problems: list[str]):
    section, _, name = full.partition(".")
    if section not in SWEPT_SECTIONS or "." in name:
        problems.append(
            f"sweep key {full!r}: only distill options (bare, e.g. 'alpha') and "
            "student.<option> can vary between rows"
        )
        return None
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    if name not in fields or full in NOT_SWEPT:
        hint = difflib.get_close_matches(name, list(fields), n=1)
        problems.append(
            f"unknown sweep key {full!r}"
            + (f" (did you mean {section}.{hint[0]}?)" if hint else "")
        )
        return None
    return fields[name]


def _convert(field, text: str):
    kind = type(field.default)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    return kind(text)


def _short(key: str) -> str:
    """'distill.alpha' -> 'alpha', 'student.drop_path_rate' -> 'student_drop_path_rate'."""
    return key.split(".", 1)[1] if key.startswith("distill.") else key.replace(".", "_")


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
