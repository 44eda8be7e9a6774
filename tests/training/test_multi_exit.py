"""The multi-exit train step (`swin_flax.training.multi_exit`): its loss is the full path's
hard-label loss plus each exit's joint loss against the full path, which the exits do not
pull toward them (a constant in their distillation terms)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from swin_flax.data.augment import AugmentConfig, preprocess_eval
from swin_flax.model.exits import MultiExitSwin
from swin_flax.model.swin import SwinTransformer, init_params
from swin_flax.settings import LossSettings
from swin_flax.training import distributed, joint_losses, losses, step
from swin_flax.training.multi_exit import make_multi_exit_step
from tests.helpers import small_swin_t_config

CONFIG = small_swin_t_config(
    img_size=16,
    embed_dim=8,
    num_heads=(1, 1, 2, 2),
    window_size=2,
    num_classes=3,
    drop_path_rate=0.0,  # deterministic: the test recomputes the loss outside the step
)
SWIN_N_EXIT = ((0, 1), (0, 1), (0, 1), (0, 1))
EXIT_LOSS = LossSettings(joint="arithmetic", alpha=0.5, distillation="kl", temperature=4.0)


def one_step(exits=(SWIN_N_EXIT,), exit_loss=EXIT_LOSS, lr=0.0):
    model = MultiExitSwin(CONFIG, exits=exits)
    params = init_params(SwinTransformer.from_config(CONFIG), 0)
    tx = optax.sgd(lr)
    train_step = make_multi_exit_step(
        model=model,
        tx=tx,
        schedule=lambda count: jnp.full((), lr),
        full_path_smoothing=0.1,
        exit_loss=exit_loss,
        total_steps=10,
        augment=AugmentConfig(out_size=16, crop_padding=0, flip=False),
        mesh=distributed.make_mesh(jax.devices()[:1]),
    )
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8))
    labels = jnp.asarray(np.array([0, 1, 2, 0], np.int32))
    # The step donates its state: give it a copy of the parameters the test reads after.
    state = step.create_train_state(jax.tree_util.tree_map(jnp.array, params), tx)
    new_state, metrics, out = train_step(state, None, images, labels, jax.random.PRNGKey(0))
    return model, params, images, labels, new_state, metrics, out


def test_the_loss_is_the_full_paths_plus_each_exits_joint_loss_against_it():
    model, params, images, labels, new_state, metrics, out = one_step()
    assert out is None and int(new_state.step) == 1
    logits = model.apply({"params": params}, preprocess_eval(images, out_size=16))
    full = losses.cross_entropy(logits[0], labels, 0.1)
    soft = losses.kl_divergence(logits[1], logits[0], 4.0)
    hard = losses.cross_entropy(logits[1], labels)
    expected = full + joint_losses.arithmetic(soft, hard, 0.5)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_full_path"], full, rtol=1e-5)
    np.testing.assert_allclose(metrics["exit1_loss_distill"], soft, atol=1e-6)
    assert {"accuracy", "exit1_accuracy", "grad_norm", "learning_rate"} <= set(metrics)


def test_blocks_only_the_full_path_uses_learn_from_its_labels_alone():
    """Stage 2's blocks 2-5 are skipped by the exit: their gradient is the full path's
    hard-label gradient, nothing from the exit's distillation term (a constant teacher)."""
    lr = 1.0
    model, params, images, labels, new_state, _, _ = one_step(lr=lr)
    batch = preprocess_eval(images, out_size=16)

    def full_only(p):
        return losses.cross_entropy(model.apply({"params": p}, batch)[0], labels, 0.1)

    grads = traverse_util.flatten_dict(jax.grad(full_only)(params), sep="/")
    old = traverse_util.flatten_dict(params, sep="/")
    new = traverse_util.flatten_dict(jax.device_get(new_state.params), sep="/")
    full_path_only = [k for k in old if k.startswith("layers_2/blocks_5/")]
    assert full_path_only
    for key in full_path_only:
        np.testing.assert_allclose(old[key] - new[key], lr * grads[key], atol=1e-6)
    shared = "layers_0/blocks_0/mlp/fc2/kernel"
    assert not np.allclose(old[shared] - new[shared], lr * grads[shared], atol=1e-6)
