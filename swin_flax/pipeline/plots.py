"""The report's plots (matplotlib, headless Agg backend), drawn from plain numbers.

Imported lazily by swin_flax.pipeline.report, so that `import swin_flax` does not load matplotlib.
Small PNGs (low dpi): the three plots of a report stay well under 150 KB together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 80
FIGSIZE = (7.0, 4.4)


def accuracy_per_epoch(curves: Mapping[str, Mapping[float, Sequence[float]]], path: Path) -> Path:
    """Test top-1 per epoch, one line per variant: the mean over seeds, and a band from the
    lowest to the highest seed (min–max) where a variant has several seeds.

    `curves`: label -> {epoch: [top-1 of each seed evaluated at that epoch]}.
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, curve in curves.items():
        epochs = sorted(curve)
        values = [list(curve[e]) for e in epochs]
        means = [sum(v) / len(v) for v in values]
        seeds = max(len(v) for v in values)
        (line,) = ax.plot(epochs, means, marker="o", markersize=3, label=f"{label} (n={seeds})")
        if seeds > 1:
            ax.fill_between(
                epochs,
                [min(v) for v in values],
                [max(v) for v in values],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    if all(float(e).is_integer() for curve in curves.values() for e in curve):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Test top-1 per epoch: mean over seeds, band = min–max over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def accuracy_vs(
    points: Sequence[tuple[str, float, float, float, bool]], xlabel: str, path: Path, *, title: str
) -> Path:
    """Final top-1 (mean, error bar ± std over seeds) against x, one labelled marker each.

    `points`: (label, x, mean top-1, std, flagged); a flagged point (noisy throughput) is
    drawn hollow and labelled "(noisy)".
    """
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for label, x, mean, std, flagged in points:
        container = ax.errorbar(
            [x], [mean], yerr=[std], fmt="o", capsize=3, mfc="none" if flagged else None
        )
        color = container.lines[0].get_color()
        ax.annotate(
            f"{label}{' (noisy)' if flagged else ''}",
            (x, mean),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
            color=color,
        )
    xs = [p[1] for p in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 (%), mean ± std over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
