"""Issue 18's candidate table: every distillation candidate of a workdir against transfer
alone, mean ± std over seeds, compared ON VALIDATION (what a choice may use), test beside
(what is reported). "vs transfer": the difference of the means ± sqrt(s1²/n1 + s2²/n2)
(summaries.gain_over), beyond the spread when |difference| > 2 × that.

    python results/experiments/candidates_table.py WORKDIR|RESULTS_JSON [...]
    python results/experiments/candidates_table.py --page results/pretrained.md

Several workdirs (candidates run beside the main run against its teacher) are read as one:
their rows are pooled, a teacher scored in several of them is shown once. `--page` recomputes
the validation comparison of every table of a results page that has `n`, `val top-1` and a
`(baseline)` row, from the rounded mean ± std and n printed there (the seeds' values are not
on the page: a difference can be off by about 0.01 from the one of the values).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from swin_flax.pipeline.summaries import BEYOND_FACTOR, gain_over, mean_std


def fmt(stats) -> str:
    mean, std = stats
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def fmt_gain(gain: float, spread: float | None, beyond: bool | None) -> str:
    text = f"{gain:+.2f}" + (f" ± {spread:.2f}" if spread is not None else "")
    if beyond is None:
        return text + " (n = 1: no spread)"
    return text + (" (beyond the spread)" if beyond else " (within the spread)")


def gain_from_summary(
    mean: float, std: float | None, n: int, base_mean: float, base_std: float | None, base_n: int
) -> tuple[float, float | None, bool | None]:
    """`summaries.gain_over` from summary statistics (sample stds, ddof=1) instead of values:
    (difference of the means, sqrt(s1²/n1 + s2²/n2), |difference| > 2 × that); no spread
    when either side has one value."""
    gain = mean - base_mean
    if std is None or base_std is None or n < 2 or base_n < 2:
        return gain, None, None
    spread = math.sqrt(std**2 / n + base_std**2 / base_n)
    return gain, spread, abs(gain) > BEYOND_FACTOR * spread


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
    base = groups.get(("transfer", False, ""), [])
    base_val = [b["val_top1"] for b in base if b.get("val_top1") is not None]
    lines = [
        "| student | distillation | n | val top-1 | vs transfer (val) | test top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for (init, kd, row), members in groups.items():
        test = [m["top1"] for m in members]
        val = [m["val_top1"] for m in members if m.get("val_top1") is not None]
        diff = "(baseline)" if (init, kd, row) == ("transfer", False, "") else "–"
        if base_val and val and diff == "–":
            diff = fmt_gain(*gain_over(val, base_val))
        lines.append(
            f"| {init} | {'KD: ' + (row or 'the paper loss') if kd else (row or 'no')} | "
            f"{len(members)} | "
            f"{fmt(mean_std(val)) if val else '–'} | {diff} | {fmt(mean_std(test))} |"
        )
    for t in teachers.values():
        lines.append(
            f"| *teacher* | | 1 | *{t.get('val_top1', float('nan')):.2f}* | | *{t['top1']:.2f}* |"
        )
    return "\n".join(lines)


_STATS = re.compile(r"^\*?(-?\d+(?:\.\d+)?)(?:\s*±\s*(\d+(?:\.\d+)?))?\*?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def page_comparisons(text: str) -> list[tuple[str, str]]:
    """(row label, validation comparison) for every table of a results page with `n`,
    `val top-1` and a `(baseline)` row; the label is the row's text before its `n` cell."""
    out: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        header = _cells(lines[i]) if lines[i].startswith("|") else []
        if "n" not in header or "val top-1" not in header:
            i += 1
            continue
        body = []
        i += 2  # the header and its |---| line
        while i < len(lines) and lines[i].startswith("|"):
            body.append(_cells(lines[i]))
            i += 1
        n_at, val_at = header.index("n"), header.index("val top-1")
        base = next((r for r in body if "(baseline)" in r), None)
        if base is None:
            continue
        base_mean, base_std = _stats(base[val_at])
        for r in body:
            match = _STATS.match(r[val_at])
            if r is base or not match or not r[n_at].isdigit():
                continue
            mean, std = _stats(r[val_at])
            gain = gain_from_summary(mean, std, int(r[n_at]), base_mean, base_std, int(base[n_at]))
            out.append((" | ".join(c for c in r[:n_at] if c), fmt_gain(*gain)))
    return out


def _stats(cell: str) -> tuple[float, float | None]:
    match = _STATS.match(cell)
    if not match:
        raise ValueError(f"not a 'mean ± std' cell: {cell!r}")
    return float(match.group(1)), (float(match.group(2)) if match.group(2) else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", type=Path, nargs="*")
    parser.add_argument("--page", type=Path, help="recompute a results page's val comparisons")
    args = parser.parse_args()
    if args.page:
        for label, comparison in page_comparisons(args.page.read_text()):
            print(f"{label}: {comparison}")
    else:
        print(table(args.workdirs))


if __name__ == "__main__":
    main()
