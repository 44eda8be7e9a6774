"""Issue 18's candidate table: every distillation candidate of a workdir against transfer
alone, mean ± std over seeds and the difference with its spread (summaries.gain_over:
beyond the spread when |difference| > 2 standard errors). Test top-1 and validation top-1.

    python results/experiments/candidates_table.py WORKDIR|RESULTS_JSON [...]

Several workdirs (candidates run beside the main run against its teacher) are read as one:
their rows are pooled, a teacher scored in several of them is shown once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swin_flax.pipeline.summaries import gain_over, mean_std


def fmt(stats) -> str:
    mean, std = stats
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def pooled_rows(workdirs: list[Path]) -> list[dict]:
    rows: list[dict] = []
    for workdir in workdirs:
        path = workdir if workdir.is_file() else workdir / "results.json"  # or a kept copy
        loaded = json.loads(path.read_text())
        rows += loaded["rows"] if isinstance(loaded, dict) else loaded
    return rows


def table(workdirs: list[Path]) -> str:
    rows = pooled_rows(workdirs)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "(teacher" in r["model"]:
            continue
        key = (r["init"], r["distillation"], r.get("sweep_row") or r.get("baseline", ""))
        groups.setdefault(key, []).append(r)
    teachers = {(r["model"], r["top1"]): r for r in rows if r["model"].endswith("(teacher)")}
    teacher = list(teachers.values())
    base = groups.get(("transfer", False, ""), [])
    lines = [
        "| student | distillation | n | test top-1 | vs transfer (test) | val top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for (init, kd, row), members in groups.items():
        test = [m["top1"] for m in members]
        val = [m["val_top1"] for m in members if m.get("val_top1") is not None]
        diff = "(baseline)" if (init, kd, row) == ("transfer", False, "") else "–"
        if base and diff == "–":
            gain, spread, beyond = gain_over(test, [b["top1"] for b in base])
            diff = f"{gain:+.2f}" + (f" ± {spread:.2f}" if spread is not None else "")
            diff += " (beyond the spread)" if beyond else ""
        lines.append(
            f"| {init} | {'KD: ' + row if kd else (row or 'no')} | {len(members)} | "
            f"{fmt(mean_std(test))} | {diff} | {fmt(mean_std(val)) if val else '–'} |"
        )
    for t in teacher:
        lines.append(
            f"| *teacher* | | 1 | *{t['top1']:.2f}* | | *{t.get('val_top1', float('nan')):.2f}* |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", type=Path, nargs="+")
    print(table(parser.parse_args().workdirs))


if __name__ == "__main__":
    main()
