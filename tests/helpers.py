"""Helpers shared by several test files: tiny data sets, models and training stages,
train.py in a subprocess (alone or as several jax.distributed processes), tree
comparison, and the configs the pipeline tests start from."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import swin_flax
from configs import demo, swin_m_kd
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.dataset import ArrayDataset
from swin_flax.settings import LoopSettings, LossSettings, OptimSettings
from swin_flax.training.loop import train_stage
from swin_flax.weights import checkpoint

REPO = Path(__file__).resolve().parents[1]

# --- tiny data, models and stages ----------------------------------------------------------


def tiny_dataset(n=48, classes=4, seed=0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    images[..., 0] = (labels * 60)[:, None, None].astype(np.uint8)  # a learnable signal
    return ArrayDataset(images=images, labels=labels, num_classes=classes)


def tiny_image_folder(root, n=48, classes=4, side=8, seed=0, splits=("train", "test")) -> Path:
    """ROOT/<split>/class_<k>/<i>.png: `n` random PNGs per split with the class in the red
    channel (as `tiny_dataset`), for the resident-vs-streamed tests."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        for i in range(n):
            label = int(rng.integers(0, classes))
            pixels = rng.integers(0, 256, (side, side, 3)).astype(np.uint8)
            pixels[..., 0] = label * 60
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def streamed_folder(root, split="train", size=None, **loader):
    """A listed image-folder split as a `StreamedDataset` (nothing decoded yet)."""
    from swin_flax.data.folder_listing import list_image_folder
    from swin_flax.data.sources import ImageFolderSource
    from swin_flax.data.stream import StreamedDataset

    source = ImageFolderSource(list_image_folder(root, split), size)
    return StreamedDataset(source, range(len(source)), **loader)


def run_tiny_stage(
    stage_dir,
    *,
    stop_after=None,
    mesh=None,
    steps_epochs=2.0,
    teacher=None,
    data=None,
    feature_weights=(),
):
    """Two epochs of swin_pico_n on 48 32x32 images (`data`: tiny_dataset()'s, or another
    4-class set of that size, resident or streamed), checkpoints every 4 steps."""
    data = tiny_dataset() if data is None else data
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    loss = LossSettings(joint="weighted_harmonic" if teacher else "hard_only", w_d=13.0, w_s=1.0)
    return train_stage(
        name="tiny",
        stage_dir=stage_dir,
        model=model,
        init_params=swin_flax.init_params(model, 0),
        train_data=data,
        optim_settings=OptimSettings(
            epochs=steps_epochs, batch_size=8, peak_lr=1e-3, warmup_epochs=0.5
        ),
        loss_settings=loss,
        augment=AugmentConfig(out_size=32),
        loop_settings=LoopSettings(
            log_every_steps=2,
            checkpoint_every_steps=4,
            progress_bar=False,
            stop_after_steps=stop_after or 0,
        ),
        seed=0,
        mesh=mesh,
        teacher=teacher[0] if teacher else None,
        teacher_params=teacher[1] if teacher else None,
        feature_weights=feature_weights,
    )


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def small_swin_t_config(**changes) -> swin_flax.SwinConfig:
    """Swin-T's depths (2, 2, 6, 2) at 32 px and width 16, windows shifting in stages 0-1:
    the teacher shape that multi-exit and stage-feature tests cut students from."""
    small = dict(
        img_size=32, patch_size=2, embed_dim=16, num_heads=(1, 2, 2, 4), window_size=4,
        num_classes=5,
    )  # fmt: skip
    return swin_flax.MODEL_PRESETS["swin_t"].replace(**{**small, **changes})


def tiny_model(num_classes: int = 3) -> swin_flax.SwinTransformer:
    """The smallest Swin that still shifts its windows (a 4x4 map in 2x2 windows): it
    compiles in about a second, for tests of the step and evaluation code around it."""
    return swin_flax.SwinTransformer(
        swin_flax.SwinConfig(
            img_size=8,
            patch_size=2,
            embed_dim=8,
            depths=(2,),
            num_heads=(1,),
            window_size=2,
            num_classes=num_classes,
        )
    )


def pico_state(timm_models):
    """The state_dict (numpy) of the perturbed pico_32 timm model (tests/weights)."""
    from tests.weights import parity_report

    return parity_report.timm_state_dict(timm_models("pico_32"))


# --- configs ---------------------------------------------------------------------------------


def smoke_config():
    config = swin_m_kd.get_config("smoke")
    config.data.name = "cifar100"
    return config


def random_teacher(path):
    """A random swin_micro as the demo's 'fine-tuned' teacher: no fine-tuning in tests."""
    model = swin_flax.create_model("swin_micro", num_classes=10, img_size=32)
    checkpoint.save_checkpoint(path, model, swin_flax.init_params(model, 5))
    return str(path)


def demo_config(teacher, **distill):
    config = demo.get_config("smoke")
    config.teacher.finetuned = teacher
    config.evaluate_teacher = False
    config.data.train_subset = 256
    config.distill.batch_size = 32
    config.loop.checkpoint_every_steps = 4
    for key, value in distill.items():
        setattr(config.distill, key, value)
    return config


# --- train.py in subprocesses ----------------------------------------------------------------


def run_train_py(*args, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


# The demo's smoke config, teacher only, with a log line every step so a test can tell
# that training is under way; identical numerics to any other logging interval.
TEACHER_ONLY = [
    "--config",
    "configs/demo.py:smoke",
    "--config.runs=",
    "--config.finetune.epochs=2",
    "--config.finetune.warmup_epochs=0.5",
    "--config.loop.log_every_steps=1",
    "--config.loop.checkpoint_every_steps=10",
    "--config.eval.throughput_batch_size=0",
]


def checkpoint_steps(stage_dir: Path) -> list[int]:
    directory = stage_dir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def start_train_py(*args, env=None):
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or dict(os.environ, JAX_PLATFORMS="cpu"),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# Six steps per stage, like the 4-vs-1-device test, so its tolerance applies: float sums in
# another order differ by ~1e-7 per step and Adam's normalisation lets that grow with steps.
MULTIHOST = TEACHER_ONLY[:2] + [
    "--config.runs=transfer+kd",
    "--config.finetune.epochs=0.3",
    "--config.distill.epochs=0.3",
    "--config.finetune.warmup_epochs=0.1",
    "--config.distill.warmup_epochs=0.1",
    "--config.loop.log_every_steps=1",
    "--config.loop.checkpoint_every_steps=100",
    "--config.eval.throughput_batch_size=0",
]


def start_processes(workdir: Path, count: int, devices_each: int, args=MULTIHOST):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices_each}",
    )
    if count == 1:
        return [start_train_py(*args, "--workdir", str(workdir), env=env)]
    address = f"localhost:{free_port()}"
    return [
        start_train_py(
            *args,
            "--workdir",
            str(workdir),
            "--multihost",
            f"--coordinator_address={address}",
            f"--num_processes={count}",
            f"--process_id={i}",
            env=env,
        )
        for i in range(count)
    ]


def finish(procs, timeout=600) -> list[tuple[int, str]]:
    stderrs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, stderr) for p, stderr in zip(procs, stderrs)]


# --- result rows of a finished run (report and summaries) ---------------------------------


def result_row(
    model,
    init,
    distill,
    seed,
    top1,
    *,
    params=1_000_000,
    ips=None,
    noisy=False,
    device="cpu",
    stage=None,
):
    r = {
        "model": model,
        "init": init,
        "distillation": distill,
        "seed": seed,
        "top1": top1,
        "params": params,
        "stage": stage or f"{model}_{init}_{int(distill)}_seed{seed}",
    }
    if ips is not None:
        r.update(
            images_per_second=ips,
            images_per_second_min=ips * 0.9,
            images_per_second_max=ips * 1.1,
            throughput_noisy=noisy,
            device=device,
        )
    return r
