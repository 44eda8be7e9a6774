"""Tests for on-device augmentation and eval preprocessing (`swin_flax.data.augment`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax.data import augment

REPO_ROOT = Path(__file__).resolve().parents[2]


def _random_images(batch: int = 8, size: int = 8, seed: int = 0) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))


def test_augment_batch_shape_dtype_and_determinism():
    images = _random_images()
    key = jax.random.key(0)
    out = augment.augment_batch(images, key, out_size=28, dtype=jnp.bfloat16)
    assert out.shape == (8, 28, 28, 3) and out.dtype == jnp.bfloat16
    same = augment.augment_batch(images, key, out_size=28, dtype=jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(same, np.float32))
    other = augment.augment_batch(images, jax.random.key(1), out_size=28, dtype=jnp.bfloat16)
    assert not np.array_equal(np.asarray(out, np.float32), np.asarray(other, np.float32))
    jitted = jax.jit(augment.augment_batch, static_argnames=("out_size", "dtype"))
    np.testing.assert_allclose(
        np.asarray(jitted(images, key, out_size=28, dtype=jnp.float32)),
        np.asarray(augment.augment_batch(images, key, out_size=28)),
        atol=1e-5,
    )


def test_augment_without_crop_and_flip_equals_eval_preprocessing():
    images = _random_images()
    train_view = augment.augment_batch(
        images, jax.random.key(3), out_size=16, crop_padding=0, flip=False
    )
    eval_view = augment.preprocess_eval(images, out_size=16)
    np.testing.assert_array_equal(np.asarray(train_view), np.asarray(eval_view))


def test_normalisation_of_constant_image_matches_hand_computation():
    images = jnp.full((2, 4, 4, 3), 128, jnp.uint8)
    out = augment.preprocess_eval(images, out_size=12)
    # (128 / 255 - mean) / std with timm's ImageNet mean (0.485, 0.456, 0.406)
    # and std (0.229, 0.224, 0.225).
    expected = [0.0740645, 0.2051821, 0.4264924]
    np.testing.assert_allclose(
        np.asarray(out), np.broadcast_to(expected, (2, 12, 12, 3)), atol=1e-6
    )
    black = augment.preprocess_eval(jnp.zeros((1, 2, 2, 3), jnp.uint8), out_size=2)
    # -mean / std
    expected_black = [-2.1179039, -2.0357143, -1.8044444]
    np.testing.assert_allclose(np.asarray(black[0, 0, 0]), expected_black, atol=1e-6)


def test_random_flip_mirrors_some_images_exactly():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :3] = 255  # bright left side: not mirror-symmetric
    images = jnp.asarray(np.broadcast_to(image, (32, 8, 8, 3)))
    out = np.asarray(augment.augment_batch(images, jax.random.key(0), out_size=8, crop_padding=0))
    plain = np.asarray(augment.preprocess_eval(images[:1], out_size=8))[0]
    mirrored = plain[:, ::-1]
    is_plain = [np.array_equal(o, plain) for o in out]
    is_mirrored = [np.array_equal(o, mirrored) for o in out]
    assert all(p != m for p, m in zip(is_plain, is_mirrored))  # each is exactly one of them
    assert 0 < sum(is_mirrored) < 32


def _shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`image` moved by (dy, dx) with zeros shifted in: what a padded crop produces."""
    height, width = image.shape[:2]
    padded = np.pad(image, ((8, 8), (8, 8), (0, 0)))
    return padded[8 - dy : 8 - dy + height, 8 - dx : 8 - dx + width]


def test_random_crop_is_a_zero_filled_shift_within_padding():
    padding = 2
    image = (np.arange(8 * 8 * 3).reshape(8, 8, 3) + 1).astype(np.uint8)  # no zero pixels
    images = jnp.asarray(np.broadcast_to(image, (16, 8, 8, 3)))
    cropped = np.asarray(augment.random_crop(images, jax.random.key(5), padding))
    shifts = set()
    for out in cropped:
        matches = [
            (dy, dx)
            for dy in range(-padding, padding + 1)
            for dx in range(-padding, padding + 1)
            if np.array_equal(out, _shift(image, dy, dx))
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 3  # offsets drawn per image, not one for the batch


@pytest.mark.multiprocess
def test_augment_batch_sharded_over_devices_matches_single_device():
    """Run in a subprocess: the 4 fake CPU devices must be configured before jax starts."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from swin_flax.data.augment import augment_batch
        assert jax.device_count() == 4
        images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        sharded = jax.device_put(images, NamedSharding(mesh, P("data")))
        step = jax.jit(lambda x, k: augment_batch(x, k, out_size=16))
        key = jax.random.key(7)
        out = step(sharded, key)
        reference = step(jax.device_put(images, jax.devices()[0]), key)
        np.testing.assert_allclose(np.asarray(out), np.asarray(reference), atol=1e-6)
        print("sharded-ok", out.sharding.spec)
        """
    )
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded-ok" in result.stdout


def test_mixup_and_cutmix_mix_images_and_targets_with_one_lambda():
    images = jnp.stack([jnp.zeros((8, 8, 3)), jnp.ones((8, 8, 3))])
    targets = jnp.eye(2)
    for kind in ({"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}):
        mixed, mixed_targets = augment.mix_batch(images, targets, jax.random.PRNGKey(3), **kind)
        lam = float(mixed_targets[0, 0])
        np.testing.assert_allclose(np.asarray(mixed_targets).sum(1), 1.0, rtol=1e-6)
        # Image 0 (zeros) mixed with image 1 (ones): its mean is the partner's share.
        assert float(mixed[0].mean()) == pytest.approx(1 - lam, abs=1e-6), kind
        if "cutmix_alpha" in kind:  # pixels are whole: either image's, never a blend
            assert set(np.unique(np.asarray(mixed[0]))) <= {0.0, 1.0}
    same, same_targets = augment.mix_batch(images, targets, jax.random.PRNGKey(0))
    assert same is images and same_targets is targets  # both alphas 0: untouched
    assert not augment.AugmentConfig(32).mixes and augment.AugmentConfig(32, cutmix_alpha=1).mixes


# ----------------------------------------------------------------------------- resized crop

TIMM = augment.ResizedCrop()  # scale (0.08, 1), ratio (3/4, 4/3)


def test_a_resized_crop_has_the_model_input_shape_and_repeats_per_key():
    images = _random_images(batch=4, size=64)
    key = jax.random.PRNGKey(3)
    out = augment.augment_batch(images, key, out_size=56, resized_crop=TIMM, dtype=jnp.bfloat16)
    assert out.shape == (4, 56, 56, 3) and out.dtype == jnp.bfloat16
    again = augment.augment_batch(images, key, out_size=56, resized_crop=TIMM, dtype=jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))
    other = augment.augment_batch(
        images, jax.random.PRNGKey(4), out_size=56, resized_crop=TIMM, dtype=jnp.bfloat16
    )
    assert not np.array_equal(np.asarray(out), np.asarray(other))


@pytest.mark.parametrize("height, width", [(64, 64), (48, 80)])
def test_resized_crop_boxes_keep_timms_area_and_ratio_bounds_inside_the_image(height, width):
    crop = augment.ResizedCrop(scale=(0.25, 0.5), ratio=(0.75, 4 / 3))
    top, left, h, w = (
        np.asarray(x)
        for x in augment.resized_crop_boxes(jax.random.PRNGKey(0), 2000, height, width, crop)
    )
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    # a box's sides are rounded to whole pixels: the bounds hold up to half a pixel per side
    low = (np.sqrt(0.25 * height * width / (4 / 3)) - 0.5) * (
        np.sqrt(0.25 * height * width * 0.75) - 0.5
    )
    high = (np.sqrt(0.5 * height * width / 0.75) + 0.5) * (
        np.sqrt(0.5 * height * width * 4 / 3) + 0.5
    )
    area = h * w
    assert (area >= low).all() and (area <= high).all()
    fraction = area / (height * width)
    assert fraction.min() < 0.27 and fraction.max() > 0.48  # the range is used, not one value
    ratio = w / h
    assert (ratio >= 0.75 * (1 - 1 / h.min())).all() and (ratio <= 4 / 3 * (1 + 1 / h.min())).all()


def test_a_whole_square_crop_at_the_images_size_is_the_identity():
    images = _random_images(batch=3, size=16)
    whole = augment.ResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    out = augment.random_resized_crop(images, jax.random.PRNGKey(0), 16, whole)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images, np.float32))
    # and through augment_batch without flip: the eval view of the same images
    train = augment.augment_batch(
        images, jax.random.PRNGKey(0), out_size=16, flip=False, resized_crop=whole
    )
    np.testing.assert_allclose(train, augment.preprocess_eval(images, out_size=16), atol=1e-6)


def test_a_box_no_draw_fits_falls_back_to_timms_central_crop():
    wide = augment.ResizedCrop(scale=(1.0, 1.0), ratio=(2.0, 2.0))  # never fits a square
    top, left, h, w = augment.resized_crop_boxes(jax.random.PRNGKey(0), 4, 32, 32, wide)
    assert (np.asarray(h) == 16).all() and (np.asarray(w) == 32).all()
    assert (np.asarray(top) == 8).all() and (np.asarray(left) == 0).all()


def test_the_resized_crop_resamples_as_pil_crops_and_resizes():
    """timm's RandomResizedCrop is PIL's crop, then its bilinear resize (antialiased when it
    shrinks): equal up to PIL's rounding to uint8 (1 level)."""
    from PIL import Image

    images = np.asarray(_random_images(batch=6, size=64, seed=1))
    key = jax.random.PRNGKey(5)
    top, left, h, w = (np.asarray(x) for x in augment.resized_crop_boxes(key, 6, 64, 64, TIMM))
    for out_size in (24, 100):  # shrinking and enlarging
        out = np.asarray(augment.random_resized_crop(jnp.asarray(images), key, out_size, TIMM))
        for b in range(6):
            box = (left[b], top[b], left[b] + w[b], top[b] + h[b])
            pil = Image.fromarray(images[b]).crop(box).resize((out_size, out_size), Image.BILINEAR)
            np.testing.assert_allclose(out[b], np.asarray(pil, np.float32), atol=1.01)
