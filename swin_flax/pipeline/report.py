"""The report of finished work directories: Table IX over seeds, per-epoch curves, plots.

Used at the end of every run (`write_report`) and on its own, also to merge the work
directories of the same config run on several machines (more seeds):

    python -m swin_flax.pipeline.report WORKDIR [WORKDIR ...] [--out OUT]

OUT (default: the one WORKDIR given; required for several) receives summary.md and
plots/*.png. What is read, per work directory:

    WORKDIR/results.json             a list of rows: model, init, distillation, seed, top1
                                     (percent), params, optional images_per_second (median),
                                     images_per_second_min/_max, throughput_noisy, device,
                                     and stage (the stage directory, relative to WORKDIR)
    WORKDIR/<stage>/metrics.jsonl    training and evaluation lines; the evaluation lines
                                     (those with "eval_top1") give the per-epoch curves

A variant is (model, init, distillation); its seeds are its rows. A model's scratch
baseline is its student variant with init "random" and no distillation
(`ResultRow.is_scratch`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from swin_flax import cli
from swin_flax.errors import UserInputError
from swin_flax.pipeline.results import (
    ResultRow,
    format_params,
    markdown_table,
    read_results,
    write_summary,
    yes_no,
)
from swin_flax.pipeline.summaries import (
    BEYOND_FACTOR,
    Variant,
    VariantSummary,
    summarize,
    variant_label,
)

PLOTS_DIR = "plots"
EPOCH_PLOT = "accuracy_per_epoch.png"
PARAMS_PLOT = "accuracy_vs_params.png"
THROUGHPUT_PLOT = "accuracy_vs_throughput.png"


def merge_rows(workdirs: Sequence[Path]) -> tuple[list[ResultRow], list[str]]:
    """The rows of all `workdirs`, and a note per duplicate dropped.

    The same (variant, seed) in two places is the same run (a copied work directory, or
    the same config and seed on two machines): the first is kept, and a `warning:` line
    (also in a run's own report, where no CLI is around it) says which was dropped, so that
    n counts distinct seeds only.
    """
    merged: list[ResultRow] = []
    seen: dict[tuple, str] = {}
    notes = []
    for workdir in workdirs:
        for row in read_results(workdir):
            key = (*row.variant, row.seed)
            if key in seen:
                note = (
                    f"{variant_label(row.variant)} seed {row.seed} of {row.workdir} dropped: "
                    f"already read from {seen[key]} (same seed, same run)"
                )
                cli.warn(note)
                notes.append(note)
                continue
            seen[key] = row.workdir
            merged.append(row)
    return merged, notes


def eval_curve(metrics_path: Path) -> dict[float, float]:
    """epoch -> eval_top1 from a metrics.jsonl (the last line per epoch wins); {} if none.

    Training lines, and a line cut short by a kill, are skipped.
    """
    curve: dict[float, float] = {}
    if not metrics_path.is_file():
        return curve
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "eval_top1" in record and "epoch" in record:
            curve[float(record["epoch"])] = float(record["eval_top1"])
    return curve


def variant_curves(rows: Sequence[ResultRow]) -> dict[Variant, dict[float, list[float]]]:
    """Per variant: epoch -> eval top-1 of every seed evaluated at that epoch."""
    curves: dict[Variant, dict[float, list[float]]] = {}
    for row in rows:
        if not row.stage:
            continue
        for epoch, top1 in eval_curve(Path(row.workdir) / row.stage / "metrics.jsonl").items():
            curves.setdefault(row.variant, {}).setdefault(epoch, []).append(top1)
    return curves


TABLE_COLUMNS = (
    "model",
    "init",
    "distillation",
    "top-1 mean ± std",
    "n",
    "gain over scratch ± spread",
    "beyond spread",
    "params",
    "img/s (device)",
)


def variant_table(summaries: Sequence[VariantSummary]) -> str:
    """Table IX over seeds: one line per variant."""
    return markdown_table(TABLE_COLUMNS, [table_cells(s) for s in summaries])


def table_cells(s: VariantSummary) -> list[str]:
    std = "–" if s.std is None else f"{s.std:.2f}"
    if s.is_scratch:
        gain = "(scratch)"
    elif s.gain is None:
        gain = "–"
    else:
        spread = "–" if s.gain_spread is None else f"{s.gain_spread:.2f}"
        gain = f"{s.gain:+.2f} ± {spread}"
    beyond = {True: "yes", False: "no", None: "–"}[s.beyond_spread]
    return [
        s.model,
        s.init,
        yes_no(s.distillation),
        f"{s.mean:.2f} ± {std}",
        str(s.n),
        gain,
        beyond,
        format_params(s.params),
        format_throughput(s.throughput),
    ]


def format_throughput(throughput: dict[str, tuple[float, bool]]) -> str:
    """ "1234 (cpu)"; a noisy measurement as "~1234 (noisy) (cpu)"; devices joined by "; "."""
    if not throughput:
        return "–"
    cells = []
    for device, (speed, noisy) in throughput.items():
        value = f"~{speed:.0f} (noisy)" if noisy else f"{speed:.0f}"
        cells.append(f"{value} ({device})")
    return "; ".join(cells)


def write_report(workdirs: Sequence[Path], out: Path, *, after: Sequence[str] = ()) -> Path:
    """Write OUT/summary.md and OUT/plots/*.png from `workdirs`; return summary.md's path.

    A run without evaluation lines yet gets no per-epoch plot, and rows without throughput
    no throughput plot: summary.md says so instead. `after`: sections that follow the
    report in summary.md (the run's sweep table).
    """
    workdirs = [Path(w) for w in workdirs]
    if not workdirs:
        raise UserInputError("no work directory to report on")
    rows, duplicates = merge_rows(workdirs)
    if not rows:
        raise UserInputError(f"no result rows in {', '.join(map(str, workdirs))}")
    summaries = summarize(rows)
    out = Path(out)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    from swin_flax.pipeline import plots  # matplotlib: only when a report is written

    lines = [
        "# Results",
        "",
        f"Merges {len(workdirs)} work director{'y' if len(workdirs) == 1 else 'ies'}: "
        + ", ".join(f"`{w}`" for w in workdirs)
        + f" ({len(rows)} rows).",
        "",
        variant_table(summaries),
        "",
        f"top-1: test accuracy in percent, mean ± sample std (ddof=1) over n seeds "
        f"(– for n=1). Gain: difference of the means to the same model's scratch "
        f"variant (init random, no distillation) ± sqrt(s1²/n1 + s2²/n2), the standard "
        f"error of the difference; beyond spread: |gain| > {BEYOND_FACTOR:g} × spread. "
        f"img/s: median throughput, per device; ~ marks a noisy measurement.",
    ]
    lines += ["", *(f"Note: {note}." for note in duplicates)] if duplicates else []
    partial = sorted({row.workdir for row in rows if row.partial})
    if partial:
        lines.append("")
        lines += [
            f"Note: {Path(w) / 'results.json'} is partial: written before its run finished."
            for w in partial
        ]

    curves = variant_curves(rows)
    if curves:
        plots.accuracy_per_epoch(
            {variant_label(v): curves[v] for s in summaries if (v := s.variant) in curves},
            plots_dir / EPOCH_PLOT,
        )
        lines += ["", f"![test top-1 per epoch]({PLOTS_DIR}/{EPOCH_PLOT})"]
    else:
        lines += [
            "",
            "No per-epoch plot: no evaluation lines (eval_top1) in any stage's metrics.jsonl yet.",
        ]

    points = [
        (s.label, float(s.params), s.mean, s.std or 0.0, False)
        for s in summaries
        if s.params is not None
    ]
    if points:
        plots.accuracy_vs(
            points, "parameters", plots_dir / PARAMS_PLOT, title="Top-1 vs parameters"
        )
        lines += ["", f"![top-1 vs parameters]({PLOTS_DIR}/{PARAMS_PLOT})"]

    points = [
        (
            f"{s.label} ({device})" if len(s.throughput) > 1 else s.label,
            speed,
            s.mean,
            s.std or 0.0,
            noisy,
        )
        for s in summaries
        for device, (speed, noisy) in s.throughput.items()
    ]
    if points:
        devices = sorted({d for s in summaries for d in s.throughput})
        plots.accuracy_vs(
            points,
            "images / second (median)",
            plots_dir / THROUGHPUT_PLOT,
            title=f"Top-1 vs throughput ({', '.join(devices)})",
        )
        lines += ["", f"![top-1 vs throughput]({PLOTS_DIR}/{THROUGHPUT_PLOT})"]
    else:
        lines += ["", "No throughput plot: no row has a throughput measurement."]

    return write_summary(out, "\n".join(lines), *after)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swin_flax.pipeline.report",
        description="Table (mean ± std over seeds, gain over scratch) and plots of finished "
        "work directories; several are merged (more seeds).",
    )
    parser.add_argument("workdirs", nargs="+", type=Path, metavar="DIR")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where summary.md and plots/ go (default: the one DIR given; required for several)",
    )
    args = parser.parse_args(argv)
    if args.out is None and len(args.workdirs) > 1:
        raise UserInputError(
            "several work directories given: say where the merged report goes with --out OUT"
        )
    out = args.out if args.out is not None else args.workdirs[0]
    for workdir in args.workdirs:  # a clear error before anything is written
        read_results(workdir)
    summary = write_report(args.workdirs, out)
    print(summary.read_text(), end="")
    print(f"wrote {summary} and {out / PLOTS_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))
