"""Evaluation: top-1 accuracy on a split, parameter count, inference throughput."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from swin_flax.data import ArrayDataset, eval_batches
from swin_flax.model import SwinTransformer
from swin_flax.sharding import batch_sharded, make_mesh, put_global, put_replicated, replicated
from swin_flax.train_step import make_eval_step, make_predict_fn


def top1_accuracy(model: SwinTransformer, params, dataset: ArrayDataset, *, batch_size: int,
                  mesh=None) -> float:
    """Exact top-1 over every example (the last batch is padded and masked)."""
    mesh = mesh if mesh is not None else make_mesh()
    devices = mesh.devices.size
    batch_size = -(-batch_size // devices) * devices  # padded examples are masked out anyway
    eval_step = make_eval_step(model, image_size=model.img_size, mesh=mesh)
    params = put_replicated(params, mesh)
    images = put_global(dataset.images, replicated(mesh))
    labels = put_global(dataset.labels, replicated(mesh))
    indices, masks = eval_batches(len(dataset), batch_size)
    sharding = batch_sharded(mesh)
    correct = total = 0
    for idx, mask in zip(indices, masks):
        c, n = eval_step(params, images, labels, put_global(idx.astype(np.int32), sharding),
                         put_global(mask, sharding))
        correct, total = correct + int(c), total + int(n)
    return correct / total


def measure_throughput(model: SwinTransformer, params, *, batch_size: int, repeats: int = 10,
                       warmup: int = 2, seed: int = 0) -> dict:
    """Inference images/second of the jitted model on the default device.

    Compilation and warm-up are excluded, the device is synchronised around each timed
    call, and the median of `repeats` runs is reported with the spread (min, max).
    """
    predict = make_predict_fn(model)
    # One local device, whatever sharding the parameters had (they may be mesh-replicated).
    params = jax.device_put(jax.device_get(params), jax.local_devices()[0])
    images = jax.random.normal(jax.random.PRNGKey(seed),
                               (batch_size, model.img_size, model.img_size, model.in_chans),
                               model.dtype)
    for _ in range(warmup):
        jax.block_until_ready(predict(params, images))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(predict(params, images))
        rates.append(batch_size / (time.perf_counter() - start))
    return {
        "images_per_second": float(np.median(rates)),
        "min": float(np.min(rates)),
        "max": float(np.max(rates)),
        "batch_size": batch_size,
        "device": jax.devices()[0].device_kind,
        "dtype": jnp.dtype(model.dtype).name,
    }

