"""The learning-rate schedule, the epoch helper, the weight-decay mask and the AdamW update."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from swin_flax.training import optim

PEAK = 2e-4


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),  # start of warmup
        (5, PEAK / 2),  # mid-warmup
        (10, PEAK),  # end of warmup = peak
        (55, PEAK / 2),  # halfway through the cosine (end_lr 0)
        (99, PEAK / 2 * (1 + math.cos(math.pi * 89 / 90))),  # the last update's lr
        (100, 0.0),  # end
        (150, 0.0),  # stays at the end value
    ],
)
def test_schedule_values(step, expected):
    schedule = optim.make_lr_schedule(PEAK, total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, atol=1e-12)


def test_schedule_with_init_and_end_lr():
    schedule = optim.make_lr_schedule(1.0, total_steps=20, warmup_steps=4, init_lr=0.2, end_lr=0.1)
    np.testing.assert_allclose(
        [float(schedule(s)) for s in (0, 2, 4, 12, 20)], [0.2, 0.6, 1.0, 0.55, 0.1], rtol=1e-6
    )


def test_schedule_rejects_impossible_durations():
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        optim.make_lr_schedule(PEAK, total_steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="total_steps must be > 0"):
        optim.make_lr_schedule(PEAK, total_steps=0, warmup_steps=0)


@pytest.mark.parametrize(
    "epochs, steps_per_epoch, expected",
    [
        (60, 391, 23460),
        (5, 391, 1955),
        (0.5, 5, 3),
        (1.5, 5, 8),
        (0.1, 30, 3),
        (0.2, 2, 0),
        (0, 100, 0),
        (2.5, np.int64(4), 10),
    ],
)
def test_steps_from_epochs(epochs, steps_per_epoch, expected):
    got = optim.steps_from_epochs(epochs, steps_per_epoch)
    assert got == expected and type(got) is int


def test_steps_from_epochs_errors():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optim.steps_from_epochs(1, 0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        optim.steps_from_epochs(1, 2.0)
    with pytest.raises(ValueError, match="epochs"):
        optim.steps_from_epochs(-1, 10)


def _swin_like_params():
    block = {
        "norm1": {"scale": np.ones(4), "bias": np.zeros(4)},
        "attn": {
            "qkv": {"kernel": np.ones((4, 12)), "bias": np.zeros(12)},
            "relative_position_bias_table": np.zeros((9, 2)),
        },
    }
    return {
        "patch_embed": {"proj": {"kernel": np.ones((2, 2, 3, 4)), "bias": np.zeros(4)}},
        "layers_0": {"blocks_0": block},
        "layers_1": {
            "downsample": {
                "norm": {"scale": np.ones(16), "bias": np.zeros(16)},
                "reduction": {"kernel": np.ones((16, 8))},
            }
        },
        "head": {"kernel": np.ones((8, 3)), "bias": np.zeros(3)},
    }


def test_weight_decay_mask_decays_kernels_only():
    mask = optim.weight_decay_mask(_swin_like_params())
    assert mask == {
        "patch_embed": {"proj": {"kernel": True, "bias": False}},
        "layers_0": {
            "blocks_0": {
                "norm1": {"scale": False, "bias": False},
                "attn": {
                    "qkv": {"kernel": True, "bias": False},
                    "relative_position_bias_table": False,
                },
            }
        },
        "layers_1": {
            "downsample": {"norm": {"scale": False, "bias": False}, "reduction": {"kernel": True}}
        },
        "head": {"kernel": True, "bias": False},
    }


@pytest.mark.slow
def test_adamw_decays_kernels_and_leaves_the_rest():
    lr, wd = 0.1, 0.5
    tx, schedule = optim.make_optimizer(peak_lr=lr, total_steps=10, warmup_steps=2, weight_decay=wd)
    params = jax.tree.map(lambda x: jnp.full(x.shape, 2.0, jnp.float32), _swin_like_params())
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)

    # count 0: lr = init_lr = 0 -> nothing moves
    updates, state = tx.update(zeros, state, params)
    params = optax.apply_updates(params, updates)
    assert all(np.all(leaf == 2.0) for leaf in jax.tree.leaves(params))

    # count 1: lr = lr / 2; zero grads -> the Adam part is 0, only the decay acts
    step_lr = float(schedule(1))
    assert step_lr == pytest.approx(lr / 2)
    updates, state = tx.update(zeros, state, params)
    new = optax.apply_updates(params, updates)
    decayed = 2.0 * (1 - step_lr * wd)
    mask = optim.weight_decay_mask(new)
    for leaf, decay in zip(jax.tree.leaves(new), jax.tree.leaves(mask)):
        np.testing.assert_allclose(leaf, decayed if decay else 2.0, rtol=1e-6)
    assert sum(jax.tree.leaves(mask)) == 4


def test_gradient_clipping_bounds_the_global_norm():
    kwargs = dict(peak_lr=1.0, total_steps=100, warmup_steps=0, weight_decay=0.0)
    clipped, _ = optim.make_optimizer(grad_clip_norm=1.0, **kwargs)
    plain, _ = optim.make_optimizer(**kwargs)
    params = {"w": jnp.zeros(2)}
    grads = [{"w": jnp.array([30.0, 40.0])}, {"w": jnp.array([0.3, -0.4])}]  # norms 50, 0.5

    def run(tx, grad_seq):
        state, out = tx.init(params), None
        for g in grad_seq:
            out, state = tx.update(g, state, params)
        return out["w"]

    by_hand = [{"w": grads[0]["w"] / 50.0}, grads[1]]  # what clipping to norm 1 must produce
    np.testing.assert_allclose(run(clipped, grads), run(plain, by_hand), rtol=1e-6)
    # and it matters: without clipping the huge first gradient dominates Adam's moments
    assert not np.allclose(run(clipped, grads), run(plain, grads), rtol=1e-2)
    with pytest.raises(ValueError, match="grad_clip_norm"):
        optim.make_optimizer(grad_clip_norm=0.0, **kwargs)


def test_layer_decay_scales_each_block_by_its_depth_from_the_head():
    import swin_flax

    model = swin_flax.create_model("swin_pico", num_classes=4)  # depths 2, 2, 4, 2: 10 blocks
    scales = optim.layer_lr_scales(swin_flax.init_params(model, 0), 0.5)
    last = sum(model.depths) + 1
    assert scales["head"]["kernel"] == 1.0 and scales["norm"]["scale"] == 1.0
    assert scales["patch_embed"]["proj"]["kernel"] == 0.5**last
    assert scales["layers_0"]["blocks_0"]["attn"]["qkv"]["kernel"] == 0.5 ** (last - 1)
    assert scales["layers_3"]["blocks_1"]["mlp"]["fc2"]["bias"] == 0.5
    # A stage's downsampling learns with the stage's first block (stage 2 starts at block 5).
    assert scales["layers_2"]["downsample"]["reduction"]["kernel"] == 0.5 ** (last - 5)
    assert set(jax.tree_util.tree_leaves(optim.layer_lr_scales({"head": {"k": 1}}, 1.0))) == {1.0}


def test_lr_scales_multiply_each_leafs_update():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    grads = {"a": jnp.ones(2), "b": jnp.ones(2)}
    plain, _ = optim.make_optimizer(peak_lr=0.1, total_steps=10, warmup_steps=0, weight_decay=0.0)
    scaled, _ = optim.make_optimizer(
        peak_lr=0.1,
        total_steps=10,
        warmup_steps=0,
        weight_decay=0.0,
        lr_scales={"a": 1.0, "b": 0.25},
    )
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_scaled, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(u_scaled["a"], u_plain["a"])
    np.testing.assert_allclose(u_scaled["b"], 0.25 * np.asarray(u_plain["b"]))
