"""The run's results, and every table and file written to a work directory.

    WORKDIR/results.json         one row per evaluated model (`evaluate_row`); while the run
                                 goes on (or after it was interrupted) each row also says
                                 "partial": true, until the run's end writes them without it
    WORKDIR/summary.md           during the run the rows' table; at its end the report
                                 (`swin_flax.pipeline.report`) and the sweep's table
    WORKDIR/sweep.md             a sweep's table in the paper's layout
    WORKDIR/skipped_images.txt   unreadable images left out (data.skip_bad_images)

Each file has one writer here, and every write is atomic (a kill leaves the old file
whole). The markdown of every table (`markdown_table`) and the parameter counts in them
(`format_params`) are written by one function each, for the report too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from swin_flax import cli
from swin_flax._files import write_json, write_text
from swin_flax.data.dataset import ArrayDataset
from swin_flax.model.swin import count_params
from swin_flax.pipeline.summaries import mean_std
from swin_flax.settings import EvalSettings
from swin_flax.training.distributed import is_main_process
from swin_flax.training.evaluate import measure_throughput, top1_accuracy

RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.md"
SWEEP_FILE = "sweep.md"
SKIPPED_IMAGES_FILE = "skipped_images.txt"
COLUMNS = ("model", "init", "distillation", "seed", "top1", "params", "images_per_second")
SWEEP_COLUMNS = ("student", "init", "distillation")  # then one column per row of the sweep
PARTIAL_KEY = "partial"  # in every row of a results.json written before its run finished
PARTIAL_NOTE = (
    "Partial: written before the run finished (it is still going, or was interrupted); the "
    "rows of the stages after these are missing."
)


def evaluate_row(
    settings: EvalSettings,
    label: str,
    init: str,
    distill: bool,
    model,
    params,
    train_data: ArrayDataset,
    eval_data: ArrayDataset,
    *,
    validation_data: ArrayDataset | None = None,
    speed: dict | None = None,
) -> dict:
    """A results row: top-1 on `eval_data` (the test split) and, with a validation carve-out,
    `val_top1` on it (what a model is chosen by). `speed` is an earlier measurement of the
    same architecture; without it throughput is measured now and returned under '_speed'
    for the caller to reuse."""

    def top1(data: ArrayDataset) -> float:
        return round(100.0 * top1_accuracy(model, params, data, batch_size=settings.batch_size), 2)

    row = {"model": label, "init": init, "distillation": bool(distill), "top1": top1(eval_data)}
    if validation_data is not None:
        row["val_top1"] = top1(validation_data)
    row["params"] = count_params(params)
    skipped = len(set(train_data.skipped_files) | set(eval_data.skipped_files))
    if skipped:
        row["skipped_images"] = skipped
    if settings.throughput_batch_size:
        if speed is None:
            speed = measure_throughput(
                model,
                params,
                batch_size=settings.throughput_batch_size,
                repeats=settings.throughput_repeats,
            )
            row["_speed"] = speed
        row.update(
            images_per_second=round(speed["images_per_second"], 1),
            images_per_second_min=round(speed["min"], 1),
            images_per_second_max=round(speed["max"], 1),
            throughput_noisy=speed["noisy"],
            device=speed["device"],
        )
    return row


def record_skipped_images(workdir: Path, *datasets: ArrayDataset) -> None:
    """data.skip_bad_images=True: what the run did not train or evaluate on, kept beside
    the results (the count also goes into every results row)."""
    skipped = sorted({path for ds in datasets for path in ds.skipped_files})
    if skipped and is_main_process():
        write_text(workdir / SKIPPED_IMAGES_FILE, "".join(f"{p}\n" for p in skipped))
        cli.note(
            f"{len(skipped)} unreadable images skipped, listed in {workdir / SKIPPED_IMAGES_FILE}"
        )


def write_results(workdir: Path, rows: list[dict], sweep: str = "", *, partial: bool = False):
    """After every row: results.json, summary.md (the rows' table) and, in a sweep
    (`sweep`: the config's), sweep.md. The run's end makes summary.md the report.

    `partial`: written while the run goes on; every row of results.json says so (a file
    an interruption leaves behind must not pass for the whole run's), and summary.md too.
    """
    if not is_main_process():
        return
    written = [{**row, PARTIAL_KEY: True} for row in rows] if partial else rows
    write_json(workdir / RESULTS_FILE, written)
    write_summary(workdir, rows_table(rows), PARTIAL_NOTE if partial else "")
    section = sweep_section(rows, sweep)
    if section:
        write_text(workdir / SWEEP_FILE, section + "\n")


def write_summary(directory: Path, *sections: str) -> Path:
    """DIRECTORY/summary.md: the non-empty `sections`, a blank line between them."""
    text = "\n\n".join(s.rstrip("\n") for s in sections if s) + "\n"
    return write_text(Path(directory) / SUMMARY_FILE, text)


def print_summary(rows: list[dict]) -> None:
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


def rows_table(rows: list[dict]) -> str:
    """One line per results row, the COLUMNS that any row has (a missing cell is empty)."""
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    return markdown_table(columns, [[_row_cell(c, r.get(c, "")) for c in columns] for r in rows])


def _row_cell(column: str, value) -> str:
    if isinstance(value, bool):
        return yes_no(value)
    if column == "params" and isinstance(value, int):
        return format_params(value)
    return str(value)


def sweep_table(rows: list[dict]) -> str:
    """The sweep's results in the paper's layout: one line per student and variant, one
    column per row of the sweep (top-1, mean ± std over seeds where there are several);
    "" when no row is a sweep's."""
    swept = [r for r in rows if "sweep_row" in r]
    if not swept:
        return ""
    columns = list(dict.fromkeys(r["sweep_row"] for r in swept))
    lines = list(dict.fromkeys(_sweep_line(r) for r in swept))
    top1: dict[tuple, dict[str, list[float]]] = {line: {c: [] for c in columns} for line in lines}
    for r in swept:
        top1[_sweep_line(r)][r["sweep_row"]].append(float(r["top1"]))
    cells = []
    for line in lines:
        student, init, distill = line
        values = [_sweep_cell(top1[line][column]) for column in columns]
        cells.append([student, init, yes_no(distill), *values])
    return markdown_table([*SWEEP_COLUMNS, *columns], cells)


def sweep_section(rows: list[dict], sweep: str) -> str:
    """sweep.md's text, also the end of the final summary.md; "" outside a sweep."""
    table = sweep_table(rows)
    return f"## Sweep: {sweep}\n\ntop-1 (%)\n\n{table}" if table else ""


def _sweep_line(row: dict) -> tuple:
    return (row["student"], row["init"], row["distillation"])


def _sweep_cell(values: list[float]) -> str:
    """'72.10' for one seed, '72.10 ± 0.50 (n=3)' for several, '' for none."""
    if not values:
        return ""
    mean, std = mean_std(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f} (n={len(values)})"
