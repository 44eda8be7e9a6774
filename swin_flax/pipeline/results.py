"""The run's results as typed rows, and every table and file written to a work directory.

    WORKDIR/results.json         one `ResultRow` per evaluated model; while the run goes on
                                 (or after it was interrupted) each also says "partial": true
    WORKDIR/summary.md           during the run the rows' table; at its end the report
                                 (report.py) and the sweep's table
    WORKDIR/sweep.md             a sweep's table in the paper's layout
    WORKDIR/skipped_images.txt   unreadable images left out (data.skip_bad_images)

Each file has one writer here, every write atomic (a kill leaves the old file whole). A
row's role (teacher, student, source-task) is a field: results.json keeps the keys it
always had, so a row's role is read back from them (a teacher's row is its stage's,
'teacher'; a source-task row says "task": "source"), never from its label.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from swin_flax import cli
from swin_flax._files import write_json, write_text
from swin_flax.errors import UserInputError
from swin_flax.training.distributed import is_main_process

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"
SWEEP_FILE = "sweep.md"
SKIPPED_IMAGES_FILE = "skipped_images.txt"
ROLES = ("teacher", "student", "source-task")
COLUMNS = ("model", "init", "distillation", "seed", "top1", "params", "images_per_second")
SWEEP_COLUMNS = ("student", "init", "distillation")  # then one column per row of the sweep
PARTIAL_NOTE = (
    "Partial: written before the run finished (it is still going, or was interrupted); the "
    "rows of the stages after these are missing."
)
THROUGHPUT_KEYS = (
    "images_per_second",
    "images_per_second_min",
    "images_per_second_max",
    "throughput_noisy",
    "device",
)


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One evaluated model: who it is (`role`, the labels), and its scores (None until
    scored). `throughput` holds the THROUGHPUT_KEYS (median, min, max img/s, noisy, device),
    measured once per architecture and shared by its rows."""

    role: str  # one of ROLES
    model: str  # its label: 'swin_n', 'swin_t (teacher)', 'swin_n [alpha=0.5]'
    init: str
    distillation: bool
    seed: int | None = None
    stage: str | None = None  # the stage directory that trained it, relative to WORKDIR
    top1: float | None = None  # percent, on the test split
    val_top1: float | None = None  # on the validation carve-out
    params: int | None = None
    skipped_images: int | None = None
    throughput: dict | None = dataclasses.field(default=None, compare=False)
    baseline: str = ""  # 'strong scratch'
    student: str = ""  # in a sweep: the student's label without the row
    sweep_row: str = ""  # in a sweep: the row's column
    partial: bool = False  # written before its run finished
    workdir: str = dataclasses.field(default="", compare=False)  # where it was read from

    @property
    def variant(self) -> tuple[str, str, bool]:
        return (self.model, self.init, self.distillation)

    @property
    def is_scratch(self) -> bool:
        """A student trained from scratch on labels alone: the baseline of its model's gains
        (the teacher and the strong scratch baseline are no student's)."""
        return (
            self.role == "student"
            and self.init == "random"
            and not self.distillation
            and (not self.baseline)
        )

    def to_dict(self) -> dict:
        """results.json's keys, in the order they have always had."""
        d = {"model": self.model, "init": self.init, "distillation": self.distillation}
        d["top1"] = self.top1
        optional = {"val_top1": self.val_top1, "params": self.params}
        d.update({k: v for k, v in optional.items() if v is not None})
        if self.skipped_images:
            d["skipped_images"] = self.skipped_images
        d.update(self.throughput or {})
        if self.role == "source-task":
            d["task"] = "source"
        d.update(seed=self.seed, stage=self.stage)
        if self.baseline:
            d["baseline"] = self.baseline
        if self.sweep_row:
            d.update(student=self.student, sweep_row=self.sweep_row)
        if self.partial:
            d["partial"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict, workdir: str = "") -> ResultRow:
        """A row of results.json (of any version: unknown keys are ignored)."""
        role = "source-task" if d.get("task") == "source" else "student"
        role = "teacher" if d.get("stage") == "teacher" else role
        known = {f.name for f in dataclasses.fields(cls)} - {"throughput", "role", "workdir"}
        throughput = {k: d[k] for k in THROUGHPUT_KEYS if k in d} or None
        values = {k: v for k, v in d.items() if k in known}
        return cls(role=role, throughput=throughput, workdir=workdir, **values)


def read_results(workdir: Path) -> list[ResultRow]:
    """The rows of WORKDIR/results.json, each knowing its work directory."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise UserInputError(f"{workdir} is not a directory (expected a finished work directory)")
    path = workdir / RESULTS_FILE
    if not path.is_file():
        raise UserInputError(
            f"{workdir} has no results.json: not a finished work directory "
            f"(or no stage has finished yet)"
        )
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(rows, list):
        raise UserInputError(f"{path} should hold a list of result rows, not {type(rows).__name__}")
    for i, row in enumerate(rows):
        required = ("model", "init", "distillation", "top1")
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise UserInputError(f"{path}: row {i} lacks {', '.join(missing)}")
    return [ResultRow.from_dict(row, str(workdir)) for row in rows]


def record_skipped_images(workdir: Path, *datasets) -> None:
    """data.skip_bad_images=True: what the run did not train or evaluate on, kept beside
    the results (the count also goes into every results row)."""
    skipped = sorted({path for ds in datasets for path in ds.skipped_files})
    if skipped and is_main_process():
        write_text(workdir / SKIPPED_IMAGES_FILE, "".join(f"{p}\n" for p in skipped))
        cli.note(
            f"{len(skipped)} unreadable images skipped, listed in {workdir / SKIPPED_IMAGES_FILE}"
        )


def write_results(workdir: Path, rows: Sequence[ResultRow], sweep: str = "", *, partial=False):
    """After every row: results.json, summary.md (the rows' table) and, in a sweep
    (`sweep`: the config's), sweep.md. The run's end makes summary.md the report.

    `partial`: written while the run goes on; every row of results.json says so (a file
    an interruption leaves behind must not pass for the whole run's), and summary.md too.
    """
    if not is_main_process():
        return
    rows = [dataclasses.replace(row, partial=partial) for row in rows]
    write_json(workdir / RESULTS_FILE, [row.to_dict() for row in rows])
    write_summary(workdir, rows_table(rows), PARTIAL_NOTE if partial else "")
    section = sweep_section(rows, sweep)
    if section:
        write_text(workdir / SWEEP_FILE, section + "\n")


def write_summary(directory: Path, *sections: str) -> Path:
    """DIRECTORY/summary.md: the non-empty `sections`, a blank line between them."""
    text = "\n\n".join(s.rstrip("\n") for s in sections if s) + "\n"
    return write_text(Path(directory) / SUMMARY_FILE, text)


def print_summary(rows: Sequence[ResultRow]) -> None:
    """The rows' table, and the sweep's table when the rows are a sweep's (nothing when
    there are no rows: the run stopped before its first evaluation)."""
    if not is_main_process() or not rows:
        return
    print(rows_table(rows), flush=True)
    if sweep_table(rows):
        print(sweep_table(rows), flush=True)


# ---------------------------------------------------------------------------- tables


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table: the header, a rule, one line per row of cells (no final newline)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("---" for _ in columns) + "|"
    return "\n".join([line(columns), rule, *(line(cells) for cells in rows)])


def format_params(params: int | None) -> str:
    """A parameter count in a table: '28.29M' from 100,000 up, '12,345' below, '–' if unknown."""
    if params is None:
        return "–"
    return f"{params / 1e6:.2f}M" if params >= 100_000 else f"{params:,}"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); the std is None for a single value."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def rows_table(rows: Sequence[ResultRow]) -> str:
    """One line per results row, the COLUMNS that any row has (a missing cell is empty)."""
    dicts = [row.to_dict() for row in rows]
    columns = [c for c in COLUMNS if any(c in d for d in dicts)]
    return markdown_table(columns, [[_cell(c, d.get(c, "")) for c in columns] for d in dicts])


def _cell(column: str, value) -> str:
    if isinstance(value, bool):
        return yes_no(value)
    if column == "params" and isinstance(value, int):
        return format_params(value)
    return str(value)


def sweep_table(rows: Sequence[ResultRow]) -> str:
    """The sweep's results in the paper's layout: one line per student and variant, one
    column per row of the sweep (top-1, mean ± std over seeds where there are several);
    "" when no row is a sweep's."""
    swept = [r for r in rows if r.sweep_row]
    if not swept:
        return ""
    columns = list(dict.fromkeys(r.sweep_row for r in swept))
    lines = list(dict.fromkeys((r.student, r.init, r.distillation) for r in swept))
    top1: dict[tuple, dict[str, list[float]]] = {line: {c: [] for c in columns} for line in lines}
    for r in swept:
        top1[(r.student, r.init, r.distillation)][r.sweep_row].append(float(r.top1))
    cells = []
    for line in lines:
        student, init, distill = line
        cells.append(
            [student, init, yes_no(distill), *(_sweep_cell(top1[line][c]) for c in columns)]
        )
    return markdown_table([*SWEEP_COLUMNS, *columns], cells)


def sweep_section(rows: Sequence[ResultRow], sweep: str) -> str:
    """sweep.md's text, also the end of the final summary.md; "" outside a sweep."""
    table = sweep_table(rows)
    return f"## Sweep: {sweep}\n\ntop-1 (%)\n\n{table}" if table else ""


def _sweep_cell(values: list[float]) -> str:
    """'72.10' for one seed, '72.10 ± 0.50 (n=3)' for several, '' for none."""
    if not values:
        return ""
    mean, std = mean_std(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f} (n={len(values)})"
