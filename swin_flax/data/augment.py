"""On-device image preprocessing: pure jax functions that run inside the jitted step.

Small data sets (CIFAR: 50,000 x 32x32x3 uint8, 150 MB) live on the accelerator. The
train step gathers a batch of uint8 images by index and calls `augment_batch`, so
cropping, flipping, the 32 -> 224 resize and normalisation happen on the device and the
host never limits throughput. Everything here is a function of its inputs and an rng
key: no Python randomness, no side effects, so a resumed run reproduces the same
augmented batches and the functions work under `jax.jit` with a batch sharded across
devices (all operations are per image and elementwise along the batch axis).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

# timm's IMAGENET_DEFAULT_MEAN / IMAGENET_DEFAULT_STD: the statistics the pretrained
# Swin weights were trained with, so fine-tuning must normalise with them too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images_uint8: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 [0, 255] -> float32 `(x / 255 - mean) / std`, per channel (last axis)."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images_uint8.astype(jnp.float32) / 255.0 - mean) / std


def resize(images: jax.Array, out_size: int) -> jax.Array:
    """Bilinear resize of a (B, H, W, C) batch to (B, out_size, out_size, C).

    `jax.image.resize` already evaluates a separable resize as two small matrix
    contractions, so a hand-written factor-7 formulation gains nothing: on an H100 the
    whole `augment_batch` of 256 images, 32 -> 224, took about 0.5 ms with either
    (identical outputs), negligible next to the model. It uses half-pixel centres, like
    PIL and torch's `align_corners=False`.
    """
    batch, height, width, channels = images.shape
    if (height, width) == (out_size, out_size):
        return images
    return jax.image.resize(images, (batch, out_size, out_size, channels), "bilinear")


def random_crop(images: jax.Array, rng: jax.Array, padding: int) -> jax.Array:
    """Per-image random crop at the input size after zero-padding each side by `padding`.

    The classic CIFAR augmentation: shifts each image by up to `padding` pixels. One
    vmapped `dynamic_slice` per batch, no Python loop, so the cost does not grow with
    the trace.
    """
    if padding == 0:
        return images
    batch, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(rng, (batch, 2), 0, 2 * padding + 1)

    def crop_one(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    return jax.vmap(crop_one)(padded, offsets)


def random_flip(images: jax.Array, rng: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(rng, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


@dataclasses.dataclass(frozen=True)
class ResizedCrop:
    """timm's RandomResizedCrop: a box of a random area fraction in `scale` and aspect
    ratio (width / height) in `ratio` (log-uniform), resized to the model input."""

    scale: tuple[float, float] = (0.08, 1.0)  # timm's defaults
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def resized_crop_boxes(
    rng: jax.Array, batch: int, height: int, width: int, crop: ResizedCrop, attempts: int = 10
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(top, left, h, w), each (batch,) int32: timm's `RandomResizedCrop.get_params` per
    image. Up to 10 draws of area x aspect ratio, the first whose rounded box fits the image
    is used; when none fits, the central crop of the largest box within `ratio`."""
    area_rng, ratio_rng, top_rng, left_rng = jax.random.split(rng, 4)
    shape = (batch, attempts)
    area = jax.random.uniform(area_rng, shape, minval=crop.scale[0], maxval=crop.scale[1])
    log_ratio = jax.random.uniform(
        ratio_rng, shape, minval=math.log(crop.ratio[0]), maxval=math.log(crop.ratio[1])
    )
    aspect = jnp.exp(log_ratio)
    w = jnp.round(jnp.sqrt(area * height * width * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area * height * width / aspect)).astype(jnp.int32)
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = jnp.argmax(fits, axis=1)[:, None]  # the first box that fits (0 if none)
    found = jnp.any(fits, axis=1)
    fallback_h, fallback_w = _central_box(height, width, crop.ratio)
    h = jnp.where(found, jnp.take_along_axis(h, first, 1)[:, 0], fallback_h)
    w = jnp.where(found, jnp.take_along_axis(w, first, 1)[:, 0], fallback_w)
    top = jnp.where(
        found, jax.random.randint(top_rng, (batch,), 0, height - h + 1), (height - h) // 2
    )
    left = jnp.where(
        found, jax.random.randint(left_rng, (batch,), 0, width - w + 1), (width - w) // 2
    )
    return top, left, h, w


def _central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """timm's fallback: the whole image, cut to the nearest aspect ratio within `ratio`."""
    if width / height < min(ratio):
        return int(round(width / min(ratio))), width
    if width / height > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def _resize_weights(start: jax.Array, size: jax.Array, full: int, out_size: int) -> jax.Array:
    """(out_size, full) bilinear weights resampling pixels [start, start + size) of an axis
    to out_size pixels as PIL does: half-pixel centres, a triangle filter widened by the
    shrink factor (antialiasing), weights renormalised within the crop (its edge pixels
    never blend with pixels outside it)."""
    size = size.astype(jnp.float32)
    step = size / out_size
    support = jnp.maximum(step, 1.0)
    centres = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * step  # within the crop
    offsets = jnp.arange(full, dtype=jnp.float32) - start.astype(jnp.float32)  # pixel - start
    inside = (offsets >= 0) & (offsets < size)
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(offsets[None, :] + 0.5 - centres[:, None]) / support)
    weights = jnp.where(inside[None, :], weights, 0.0)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def random_resized_crop(
    images: jax.Array, rng: jax.Array, out_size: int, crop: ResizedCrop
) -> jax.Array:
    """(B, H, W, C) -> (B, out_size, out_size, C) float32: each image's `resized_crop_boxes`
    box resized bilinearly to out_size (antialiased when it shrinks), as timm's
    RandomResizedCrop does with PIL. Two per-image matrix products (rows, then columns),
    in full float32 precision: no dynamic shapes, one compilation for every box."""
    batch, height, width, _ = images.shape
    top, left, h, w = resized_crop_boxes(rng, batch, height, width, crop)
    rows = jax.vmap(_resize_weights, (0, 0, None, None))(top, h, height, out_size)
    cols = jax.vmap(_resize_weights, (0, 0, None, None))(left, w, width, out_size)
    highest = jax.lax.Precision.HIGHEST
    images = jnp.einsum("boh,bhwc->bowc", rows, images.astype(jnp.float32), precision=highest)
    return jnp.einsum("bpw,bowc->bopc", cols, images, precision=highest)


def augment_batch(
    images_uint8: jax.Array,
    rng: jax.Array,
    *,
    out_size: int,
    crop_padding: int = 4,
    flip: bool = True,
    resized_crop: ResizedCrop | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Training view of a (B, H, W, 3) uint8 batch: crop, flip, resize, normalise.

    Crop and flip act at the native resolution (cheap, and the same pixels as the
    standard CIFAR recipe); normalisation comes before the resize because a bilinear
    resize is an average with weights that sum to one, so the two commute and
    normalising 32x32 instead of 224x224 touches 49x fewer values. Arithmetic is float32
    and the result is cast to `dtype` (bf16 on accelerators) at the end.

    With `resized_crop` (images larger than the model input), timm's RandomResizedCrop
    replaces the padded crop and the resize (crop_padding is not used), and the flip and
    normalisation act on its out_size output.
    """
    crop_rng, flip_rng = jax.random.split(rng)
    if resized_crop is not None:
        images = random_resized_crop(images_uint8, crop_rng, out_size, resized_crop)
        if flip:
            images = random_flip(images, flip_rng)
        return normalize(images, mean, std).astype(dtype)
    images = random_crop(images_uint8, crop_rng, crop_padding)
    if flip:
        images = random_flip(images, flip_rng)
    images = resize(normalize(images, mean, std), out_size)
    return images.astype(dtype)


def preprocess_eval(
    images_uint8: jax.Array,
    *,
    out_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Evaluation view: the same resize and normalisation as training, no randomness."""
    return resize(normalize(images_uint8, mean, std), out_size).astype(dtype)


def mix_batch(
    images: jax.Array,
    targets: jax.Array,
    rng: jax.Array,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Mixup or CutMix of an augmented (B, H, W, C) batch and its (B, classes) soft targets.

    timm's `Mixup` in batch mode: one mixing weight lambda ~ Beta(alpha, alpha) for the whole
    batch, each image mixed with the batch reversed; with both alphas > 0 each batch is
    CutMix or Mixup with probability 1/2. CutMix pastes a box of area (1 - lambda) and then
    sets lambda to the area actually pasted (the box is clipped at the border). Targets mix
    with the same lambda. Teacher and student see the same mixed images (the "consistent
    views" of function-matching distillation).
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    choice_rng, mix_rng, box_rng = jax.random.split(rng, 3)
    partner_images, partner_targets = images[::-1], targets[::-1]
    use_cutmix = (
        jax.random.bernoulli(choice_rng, 0.5)
        if mixup_alpha > 0 and cutmix_alpha > 0
        else jnp.asarray(cutmix_alpha > 0)
    )
    alpha = jnp.where(use_cutmix, max(cutmix_alpha, 1e-6), max(mixup_alpha, 1e-6))
    lam = jax.random.beta(mix_rng, alpha, alpha)
    _, height, width, _ = images.shape
    box_mask, box_lam = _cutmix_box(box_rng, lam, height, width)
    mixed_up = lam * images + (1.0 - lam) * partner_images
    cut = jnp.where(box_mask[None, :, :, None], partner_images, images)
    images = jnp.where(use_cutmix, cut, mixed_up)
    lam = jnp.where(use_cutmix, box_lam, lam)
    return images, lam * targets + (1.0 - lam) * partner_targets


def _cutmix_box(rng: jax.Array, lam: jax.Array, height: int, width: int):
    """A (H, W) bool mask of a random box of area about (1 - lam), and the kept fraction."""
    cut_h = jnp.floor(height * jnp.sqrt(1.0 - lam)).astype(jnp.int32)
    cut_w = jnp.floor(width * jnp.sqrt(1.0 - lam)).astype(jnp.int32)
    cy_rng, cx_rng = jax.random.split(rng)
    cy = jax.random.randint(cy_rng, (), 0, height)
    cx = jax.random.randint(cx_rng, (), 0, width)
    top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
    left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    mask = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    kept = 1.0 - ((bottom - top) * (right - left)) / (height * width)
    return mask, kept.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What a training step does to its batch (static: part of the compiled step)."""

    out_size: int
    crop_padding: int = 4
    flip: bool = True
    mixup_alpha: float = 0.0  # > 0: Mixup with lambda ~ Beta(alpha, alpha)
    cutmix_alpha: float = 0.0  # > 0: CutMix (both > 0: one of the two per batch)
    resized_crop: ResizedCrop | None = None  # timm's RandomResizedCrop (replaces the pad-crop)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0
