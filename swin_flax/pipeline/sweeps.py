"""Rows of one paper table in one work directory: `--config.sweep`.

    sweep = 'alpha=0,0.25,0.5,0.75'                          one key, its values
    sweep = 'alpha_start=0,alpha_end=0.5; alpha_start=0.5,alpha_end=1'   rows of several keys
    sweep = 'student.model=swin_m,alpha=0; student.model=swin_n,alpha=0'

A bare key is a `distill` option; `student.<key>` changes the student. Algorithm 1 iterates
the rows like seeds: every row trains each variant (per seed) against the one fine-tuned
teacher, in its own stage directory (`student_random_kd_alpha0.25`), resumable on its own;
the teacher's logits are recorded once and read by every row (training/teacher_logits.py). The results
get one table in the paper's layout: students (and variants) down, rows across
(`swin_flax.pipeline.results.sweep_table`, in sweep.md and summary.md).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from swin_flax.errors import UserInputError
from swin_flax.settings import RunSettings, range_problems

SECTIONS = ("distill", "student")
NOT_SWEPT = {"student.cut_points"}  # tuples: not expressible as one value


@dataclasses.dataclass(frozen=True)
class SweepRow:
    overrides: tuple[tuple[str, Any], ...] = ()  # ('distill.alpha', 0.25), ...
    name: str = ""  # stage-name suffix: 'alpha0.25'
    column: str = ""  # the distill part, a column of the table: 'alpha=0.25'

    def settings(self, base: RunSettings) -> RunSettings:
        """`base` with this row's values."""
        sections: dict[str, dict] = {}
        for key, value in self.overrides:
            section, field = key.split(".")
            sections.setdefault(section, {})[field] = value
        return dataclasses.replace(
            base,
            **{
                name: dataclasses.replace(getattr(base, name), **values)
                for name, values in sections.items()
            },
        )


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


def sweep_rows(
    settings: RunSettings, check: Callable[[RunSettings], list[str]] = range_problems
) -> list[SweepRow]:
    """The validated rows of `settings.sweep`; [SweepRow()] (the settings as they are)
    when there is none. Each row's settings go through `check` (the pre-flight passes
    every check the base settings get). Every problem is reported in one error."""
    parsed = split_rows(settings.sweep)
    if not parsed:
        return [SweepRow()]
    problems: list[str] = []
    typed_rows = []
    for row in parsed:
        typed = []
        for key, text in row:
            full = key if "." in key else f"distill.{key}"
            field = _field(full, problems)
            if field is None:
                continue
            try:
                typed.append((full, _convert(field, text)))
            except ValueError:
                problems.append(f"sweep value {key}={text!r} is not a {field.type}")
        typed_rows.append(tuple(typed))
    if problems:
        raise UserInputError("invalid sweep:\n  - " + "\n  - ".join(problems))
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
        )
        column = ", ".join(f"{_short(k)}={_text(v)}" for k, v in shown if k.startswith("distill."))
        row = SweepRow(overrides=typed, name=name, column=column)
        problems += [f"sweep row {name!r}: {p}" for p in check(row.settings(settings))]
        rows.append(row)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        problems.append(f"sweep rows repeat: {settings.sweep!r}")
    if problems:
        raise UserInputError("invalid sweep:\n  - " + "\n  - ".join(problems))
    return rows


def _field(full: str, problems: list[str]):
    section, _, name = full.partition(".")
    if section not in SECTIONS or "." in name:
        problems.append(
            f"sweep key {full!r}: only distill options (bare, e.g. 'alpha') and "
            "student.<option> can vary between rows"
        )
        return None
    kind = type(getattr(RunSettings(), section))
    fields = {f.name: f for f in dataclasses.fields(kind)}
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
