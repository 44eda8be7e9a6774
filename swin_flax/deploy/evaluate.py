"""The accuracy and speed of an exported file itself, on the user's images.

    flax = flax_predictions(model, params, eval_set)
    result = evaluate_file(path, fmt, eval_set, flax, img_size=model.img_size)

runs the file in its own runtime (`runners.load_model`: onnxruntime, the LiteRT
interpreter, jax.export) over every image of the evaluation set and reports its top-1, the
Flax checkpoint's top-1 on the same images, how often their top-1 classes agree, the file's
size and its CPU latency at batch 1 and at a batch of 32 (median of timed repeats after a
warm-up, with the thread count given; a fixed-batch file runs a batch of 32 as consecutive
calls, as it would be deployed).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import jax
import numpy as np

from swin_flax.deploy.image_sets import EvaluationSet
from swin_flax.deploy.preprocess import Preprocessing
from swin_flax.deploy.runners import load_model

LATENCY_BATCHES = (1, 32)
# Timed repeats per latency: until this many seconds have passed, within these bounds.
_LATENCY_SECONDS = 1.0
_MIN_REPEATS, _MAX_REPEATS = 3, 50


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One exported file measured on an evaluation set (top-1 values in percent)."""

    images: int
    top1: float  # the exported file's
    flax_top1: float  # the Flax checkpoint's, float32, on the same images
    agreement: float  # images on which both predict the same class, percent
    size_mb: float
    latency_ms: dict[int, float]  # batch size -> median milliseconds per call of that batch
    threads: int | None
    source: str

    @property
    def drop(self) -> float:
        """Points of top-1 lost against the Flax checkpoint (negative: gained)."""
        return self.flax_top1 - self.top1

    def summary(self) -> str:
        latency = ", ".join(f"batch {b}: {ms:.2f} ms" for b, ms in self.latency_ms.items())
        threads = f"{self.threads} thread(s)" if self.threads else "the runtime's threads"
        return (
            f"evaluate: {self.source}: top-1 {self.top1:.2f}% "
            f"(Flax checkpoint {self.flax_top1:.2f}%, drop {self.drop:+.2f} points); top-1 "
            f"agreement {self.agreement:.2f}%; {self.size_mb:.2f} MB; CPU latency "
            f"({threads}) {latency}"
        )


def flax_predictions(
    model,
    params,
    eval_set: EvaluationSet,
    batch_size: int = 64,
    *,
    preprocessing: Preprocessing | None = None,
) -> np.ndarray:
    """The Flax checkpoint's top-1 class per image (float32, exact matmuls), preprocessed
    as `preprocessing` says (the checkpoint's; default: no stored size)."""
    pre = preprocessing or Preprocessing(model.img_size)
    with jax.default_matmul_precision("highest"):
        forward = jax.jit(lambda x: model.apply({"params": params}, x))
        return np.concatenate(
            [
                np.asarray(forward(images)).argmax(1)
                for images, _ in eval_set.batches(pre, batch_size)
            ]
        )


def file_predictions(runner, eval_set: EvaluationSet, batch_size: int = 64) -> np.ndarray:
    """The file's top-1 class per image, preprocessed as its metadata says."""
    batches = eval_set.batches(runner.preprocessing, batch_size)
    return np.concatenate([runner(images).argmax(1) for images, _ in batches])


def median_latency_ms(run, images: np.ndarray) -> float:
    """Median wall time of `run(images)` in ms, after one untimed warm-up call."""
    run(images)
    times = []
    started = time.perf_counter()
    while len(times) < _MAX_REPEATS:
        start = time.perf_counter()
        run(images)
        times.append(time.perf_counter() - start)
        if len(times) >= _MIN_REPEATS and time.perf_counter() - started > _LATENCY_SECONDS:
            break
    return float(np.median(times) * 1e3)


def latency_ms(path, fmt: str, images: np.ndarray, threads: int | None) -> dict[int, float]:
    """Batch size -> median ms per call, for each of LATENCY_BATCHES (images repeated
    when there are fewer)."""
    runner = load_model(path, threads, kind=fmt)
    result = {}
    for batch in LATENCY_BATCHES:
        chunk = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)
        result[batch] = median_latency_ms(runner, chunk)
    return result


def evaluate_file(
    path,
    fmt: str,
    eval_set: EvaluationSet,
    flax: np.ndarray,
    *,
    threads: int | None = None,
) -> Evaluation:
    """Measure the exported file `path` (format `fmt`); `flax` from `flax_predictions`."""
    path = Path(os.fspath(path))
    runner = load_model(path, kind=fmt)  # accuracy: the runtime's own thread count
    got = file_predictions(runner, eval_set)
    labels = eval_set.labels
    sample = next(eval_set.batches(runner.preprocessing, max(LATENCY_BATCHES)))[0]
    return Evaluation(
        images=len(labels),
        top1=percent(got == labels),
        flax_top1=percent(flax == labels),
        agreement=percent(got == flax),
        size_mb=path.stat().st_size / 1e6,
        latency_ms=latency_ms(path, fmt, sample, threads),
        threads=threads,
        source=eval_set.description,
    )


def percent(hits: np.ndarray) -> float:
    return float(100.0 * np.mean(hits)) if len(hits) else 0.0
