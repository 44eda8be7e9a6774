"""The deployment table: one checkpoint exported to every format at every precision it
supports, each file measured on the user's images.

    python -m swin_flax.deploy.report CKPT --evaluate DIR [--calibration DIR] --out OUT
        [--batch 1] [--threads 1] [--calibration-count 300] [--calibration-seed 0]

writes OUT/<format>_<precision>.<suffix> (fp32, fp16, int8-weights, int8 to ONNX and LiteRT;
fp32, fp16 to StableHLO; int8 only with --calibration), then OUT/deploy.md (format x
precision: size MB, CPU latency at batch 1 and 32, top-1, drop vs the Flax checkpoint,
top-1 agreement, ops left float), OUT/deploy.json (the same rows) and OUT/top1_vs_size.png.
An export that fails (a converter error, a failed parity check) is a row saying why; the
others go on. Needs `pip install -e ".[export]"`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path

from swin_flax import cli
from swin_flax._files import write_json, write_text
from swin_flax.deploy import image_sets
from swin_flax.deploy.evaluate import LATENCY_BATCHES, evaluate_file, flax_predictions, percent
from swin_flax.deploy.export import write_checked
from swin_flax.deploy.inputs import check_writable_folder, export_inputs
from swin_flax.deploy.runners import FORMATS
from swin_flax.errors import UserInputError

PLOT_FILE = "top1_vs_size.png"
_LISTED_OPS = 4  # op types named per row of "ops left float" (deploy.json has all)


def planned_exports(calibrated: bool) -> list[tuple[str, str]]:
    """(format, precision) of every export the table holds: int8 needs calibration."""
    return [
        (fmt, precision)
        for fmt, spec in FORMATS.items()
        for precision in spec.precisions
        if calibrated or precision != "int8"
    ]


def deployment_rows(
    checkpoint,
    out_dir: Path,
    evaluate,
    *,
    calibration=None,
    calibration_count: int = image_sets.DEFAULT_CALIBRATION_COUNT,
    calibration_seed: int = 0,
    batch: int = 1,
    threads: int | None = 1,
) -> tuple[list[dict], dict]:
    """(one row per export, the table's context: Flax top-1, data, calibration)."""
    inputs = export_inputs(
        checkpoint,
        precision="int8" if calibration is not None else "fp32",
        batch=batch,
        calibration=calibration,
        calibration_count=calibration_count,
        calibration_seed=calibration_seed,
        evaluate=evaluate,
    )
    model, eval_set = inputs.model, inputs.eval_set
    flax = flax_predictions(model, inputs.params, eval_set, preprocessing=inputs.preprocessing)
    context = {
        "checkpoint": str(checkpoint),
        "model": model.config.describe(),
        "evaluation": eval_set.description,
        "flax_top1": percent(flax == eval_set.labels),
        "calibration": inputs.calibration.description if inputs.calibration else None,
        "batch": batch,
        "threads": threads,
    }
    rows = []
    for fmt, precision in planned_exports(calibration is not None):
        path = out_dir / f"{fmt}_{precision}{FORMATS[fmt].suffix}"
        print(f"exporting {fmt} {precision} -> {path}", flush=True)
        row = {"format": fmt, "precision": precision, "file": path.name}
        try:
            report = write_checked(inputs, path, fmt, batch, precision)
            evaluation = evaluate_file(path, fmt, eval_set, flax, threads=threads)
        except UserInputError as err:  # a converter or a parity check said no: the row says why
            rows.append({**row, "error": str(err)})
            cli.warn(f"{fmt} {precision}: {err}")
            continue
        rows.append({**row, **_measures(evaluation), **_float_ops(report.info)})
    return rows, context


def _measures(evaluation) -> dict:
    values = dataclasses.asdict(evaluation)
    values["latency_ms"] = {str(b): ms for b, ms in evaluation.latency_ms.items()}
    values["drop"] = evaluation.drop
    return values


def _float_ops(info: dict) -> dict:
    if "op_kinds" not in info:
        return {}
    kinds = info["op_kinds"]
    return {"int8_ops": kinds.get("int8", {}), "float_ops": kinds.get("float", {})}


def markdown_table(rows: list[dict], context: dict, command: str | None = None) -> str:
    """The deployment table as markdown, with what it was measured on."""
    threads = context["threads"] or "the runtime's"
    lines = [
        f"Checkpoint `{context['checkpoint']}` ({context['model']}); evaluated on "
        f"{context['evaluation']}: Flax float32 top-1 **{context['flax_top1']:.2f}%**.",
        "",
        f"Exported at batch {context['batch']}; latency is the median CPU wall time of one "
        f"call with {threads} thread(s) (batch 32: 32 images, as consecutive calls for a "
        "fixed-batch file). "
        + (
            f"int8 calibrated on {context['calibration']}."
            if context["calibration"]
            else "No --calibration: no int8 rows."
        ),
        "",
    ]
    if command:
        lines += ["    " + command, ""]
    batches = " | ".join(f"ms, batch {b}" for b in LATENCY_BATCHES)
    lines += [
        f"| format | precision | size MB | {batches} | top-1 % | drop vs Flax | agreement % "
        "| ops left float |",
        "|---|---|---|" + "---|" * len(LATENCY_BATCHES) + "---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            empty = " | ".join(["-"] * (len(LATENCY_BATCHES) + 4))
            lines.append(
                f"| {row['format']} | {row['precision']} | {empty} | failed: {row['error']} |"
            )
            continue
        latency = " | ".join(f"{row['latency_ms'][str(b)]:.2f}" for b in LATENCY_BATCHES)
        lines.append(
            f"| {row['format']} | {row['precision']} | {row['size_mb']:.2f} | {latency} | "
            f"{row['top1']:.2f} | {row['drop']:+.2f} | {row['agreement']:.2f} | "
            f"{_left_float(row)} |"
        )
    return "\n".join(lines) + "\n"


def _left_float(row: dict) -> str:
    if "float_ops" not in row:
        return "all (float model)" if row["precision"] in ("fp32", "fp16") else ""
    ops = sorted(row["float_ops"].items(), key=lambda item: -item[1])
    if not ops:
        return "none"
    shown = ", ".join(f"{op} x{n}" for op, n in ops[:_LISTED_OPS])
    more = sum(n for _, n in ops[_LISTED_OPS:])
    return shown + (f", {more} more" if more else "")


def plot_top1_vs_size(rows: list[dict], flax_top1: float, path: Path) -> Path:
    """Top-1 against file size, one labelled marker per export (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # colour: the format, marker: the precision; one legend entry per file, since files of
    # one size and top-1 (the fp32 ones) would hide each other's labels
    colours = {"onnx": "tab:blue", "litert": "tab:orange", "stablehlo": "tab:green"}
    markers = {"fp32": "o", "fp16": "s", "int8-weights": "^", "int8": "D"}
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for row in rows:
        if "error" in row:
            continue
        ax.scatter(
            row["size_mb"],
            row["top1"],
            color=colours.get(row["format"], "tab:grey"),
            marker=markers.get(row["precision"], "o"),
            label=f"{row['format']} {row['precision']}",
            alpha=0.8,
        )
    ax.axhline(flax_top1, color="grey", linestyle="--", linewidth=1, label="Flax float32")
    top1s = [row["top1"] for row in rows if "error" not in row] + [flax_top1]
    ax.set_ylim(min(top1s) - 1.0, max(top1s) + 1.0)  # a point either way stays in view
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Exported files: top-1 on the evaluation images against size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_report(rows: list[dict], context: dict, out_dir: Path, command: str | None) -> Path:
    """OUT/deploy.md, deploy.json and the plot; returns the markdown's path."""
    write_json(out_dir / "deploy.json", {"context": context, "rows": rows})
    plot_top1_vs_size(rows, context["flax_top1"], out_dir / PLOT_FILE)
    table = markdown_table(rows, context, command)
    path = out_dir / "deploy.md"
    write_text(path, f"# Deployment table\n\n{table}\n![top-1 against size]({PLOT_FILE})\n")
    return path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m swin_flax.deploy.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("checkpoint", help="swin_flax checkpoint directory")
    parser.add_argument(
        "--evaluate", required=True, metavar="DIR", help="DIR/<class>/* or tfds:NAME[:SPLIT]"
    )
    parser.add_argument("--calibration", metavar="DIR", help="int8: representative images")
    parser.add_argument(
        "--calibration-count", type=int, default=image_sets.DEFAULT_CALIBRATION_COUNT
    )
    parser.add_argument("--calibration-seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="the folder for the files and the table")
    parser.add_argument("--batch", type=int, default=1, help="fixed batch of every export")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads when timing")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    out_dir = Path(os.fspath(args.out))
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--out {out_dir} is a file; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create --out {out_dir} ({err.strerror or err})") from None
    check_writable_folder(out_dir, "give an --out folder you can write to")
    rows, context = deployment_rows(
        args.checkpoint,
        out_dir,
        args.evaluate,
        calibration=args.calibration,
        calibration_count=args.calibration_count,
        calibration_seed=args.calibration_seed,
        batch=args.batch,
        threads=args.threads,
    )
    command = shlex.join(["python", "-m", "swin_flax.deploy.report", *argv])
    path = write_report(rows, context, out_dir, command)
    print(markdown_table(rows, context), flush=True)
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))
