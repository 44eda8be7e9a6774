"""Evaluation: top-1 accuracy on a split, parameter count, inference throughput."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.feed import DataFeed
from swin_flax.data.stream import StreamedDataset
from swin_flax.model.swin import SwinTransformer
from swin_flax.training.distributed import (
    batch_sharded,
    make_mesh,
    put_replicated,
    replicated,
)
from swin_flax.training.step import make_eval_step, make_predict_fn

NOISY_IQR = 0.2  # the benchmarks' threshold too (benchmarks/common.py)


def make_top1_fn(
    model: SwinTransformer,
    dataset: ArrayDataset | StreamedDataset,
    *,
    batch_size: int,
    mesh=None,
) -> Callable[[Any], float]:
    """`top1(params)`: exact top-1 over every example (the last batch padded and masked).

    Compiled once, and a resident split is put on the devices once, so that evaluating
    every epoch costs only the forward passes (a streamed split is read again each time).
    """
    mesh = mesh if mesh is not None else make_mesh()
    devices = mesh.devices.size
    batch_size = -(-batch_size // devices) * devices  # padded examples are masked out anyway
    eval_step = make_eval_step(model, image_size=model.img_size, mesh=mesh)
    feed = DataFeed(dataset, sharding=batch_sharded(mesh), replicated=replicated(mesh))

    def top1(params) -> float:
        params = put_replicated(jax.device_get(params), mesh)
        counts = []
        batches = feed.evaluation(batch_size)
        try:
            for images, labels, mask in batches:
                counts.append(eval_step(params, images, labels, mask))
        finally:
            batches.close()
        correct, total = (sum(int(c[i]) for c in counts) for i in (0, 1))
        return correct / total

    return top1


def top1_accuracy(
    model: SwinTransformer, params, dataset: ArrayDataset, *, batch_size: int, mesh=None
) -> float:
    """Exact top-1 over every example (the last batch is padded and masked)."""
    return make_top1_fn(model, dataset, batch_size=batch_size, mesh=mesh)(params)


def measure_throughput(
    model: SwinTransformer,
    params,
    *,
    batch_size: int,
    repeats: int = 10,
    warmup: int = 2,
    seed: int = 0,
) -> dict:
    """Inference images/second of the jitted model on the default device.

    Compilation and warm-up are excluded, the device is synchronised around each timed
    call, and the median of `repeats` runs is reported with the spread (min, max). A run
    whose interquartile range exceeds NOISY_IQR of the median (another process competing
    for the device) is flagged `noisy`: a number to repeat, not a fact to report.
    """
    predict = make_predict_fn(model)
    # One local device, whatever sharding the parameters had (they may be mesh-replicated).
    params = jax.device_put(jax.device_get(params), jax.local_devices()[0])
    images = jax.random.normal(
        jax.random.PRNGKey(seed),
        (batch_size, model.img_size, model.img_size, model.in_chans),
        model.dtype,
    )
    for _ in range(warmup):
        jax.block_until_ready(predict(params, images))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(predict(params, images))
        rates.append(batch_size / (time.perf_counter() - start))
    median = float(np.median(rates))
    q1, q3 = np.percentile(rates, [25, 75])
    return {
        "images_per_second": median,
        "min": float(np.min(rates)),
        "max": float(np.max(rates)),
        "noisy": bool((q3 - q1) > NOISY_IQR * median),
        "batch_size": batch_size,
        "device": jax.devices()[0].device_kind,
        "dtype": jnp.dtype(model.dtype).name,
    }
