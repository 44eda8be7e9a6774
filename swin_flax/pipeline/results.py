"""The run's results: one row per evaluated model, in results.json and summary.md."""

from __future__ import annotations

import json
from pathlib import Path

from swin_flax.data.dataset import ArrayDataset
from swin_flax.model.swin import count_params
from swin_flax.settings import EvalSettings
from swin_flax.training.distributed import is_main_process
from swin_flax.training.evaluate import measure_throughput, top1_accuracy

SKIPPED_IMAGES_FILE = "skipped_images.txt"
COLUMNS = ("model", "init", "distillation", "seed", "top1", "params", "images_per_second")


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
    speed: dict | None = None,
) -> dict:
    """A results row. `speed` is an earlier measurement of the same architecture; without
    it throughput is measured now and returned under '_speed' for the caller to reuse."""
    row = {
        "model": label,
        "init": init,
        "distillation": bool(distill),
        "top1": round(
            100.0 * top1_accuracy(model, params, eval_data, batch_size=settings.batch_size), 2
        ),
        "params": count_params(params),
    }
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
        (workdir / SKIPPED_IMAGES_FILE).write_text("".join(f"{p}\n" for p in skipped))
        print(
            f"note: {len(skipped)} unreadable images skipped, listed in "
            f"{workdir / SKIPPED_IMAGES_FILE}",
            flush=True,
        )


def write_results(workdir: Path, rows: list[dict]) -> None:
    if not is_main_process():
        return
    (workdir / "results.json").write_text(json.dumps(rows, indent=2))
    (workdir / "summary.md").write_text(format_table(rows) + "\n")


def format_table(rows: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([header, rule, *body])


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and value > 100_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def print_summary(rows: list[dict]) -> None:
    if is_main_process():
        print(format_table(rows), flush=True)
