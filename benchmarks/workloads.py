"""The measured workloads of the benchmarks: Flax inference, the distillation train step and the
on-device input path, their timm/PyTorch counterparts, the FLOP cross-check and the run's
environment record. Nothing runs when imported: torch and timm are optional and imported on
first use (`torch_modules()`), so `import benchmarks.workloads` never loads torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    DATASET_IMAGE_SIZE,
    IMG_SIZE,
    MODELS,
    NUM_CLASSES,
    PARTS,
    PEAK_LR,
    W_D,
    W_S,
    WEIGHT_DECAY,
    available_cores,
    cost_flops,
    cpu_identity,
    cpu_model,
    flax_dtype,
    forward_flops,
    git_commit,
    jax_precision,
    jax_sync,
    measure,
    summarise,
    swin_forward_macs,
)
from swin_flax.data.augment import augment_batch
from swin_flax.model import swin as swin_model
from swin_flax.model.presets import create_model, preset
from swin_flax.model.swin import count_params, init_params

# Window-attention implementations of the Flax model (its `attention` field), default first.
ATTENTION_IMPLS = tuple(getattr(swin_model, "ATTENTION_IMPLEMENTATIONS", ("einsum",)))
DEFAULT_ATTENTION = getattr(swin_model.SwinTransformer, "attention", "einsum")


@functools.cache
def torch_modules() -> SimpleNamespace:
    """torch, timm, torch.nn.functional (F) and timm's SwinTransformer (TimmSwin), imported on
    the first call; all None with `error` set where they cannot be imported (the torch
    backends are then skipped with a note)."""
    try:
        import timm
        import torch
        import torch.nn.functional as F
        from timm.models.swin_transformer import SwinTransformer as TimmSwin
    except Exception as err:  # ImportError, or a broken CUDA install
        return SimpleNamespace(
            torch=None, timm=None, F=None, TimmSwin=None, error=f"{type(err).__name__}: {err}"
        )
    return SimpleNamespace(torch=torch, timm=timm, F=F, TimmSwin=TimmSwin, error=None)


def torch_sync(_=None) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Settings:
    platform: str  # jax backend: cpu / gpu / tpu
    torch_device: str | None
    repeats: int
    warmup: int
    min_time: float
    rotate: int
    channels_last: bool
    compile_mode: str | None
    timm_fused_attn: str
    teacher: str
    batch_spec: dict


def parse_batch_spec(spec: str) -> dict:
    """'auto', '8', 'kd=4', 'swin_b=64', 'swin_b:infer=128', comma-separated; last wins."""
    table = {}
    for item in spec.split(","):
        item = item.strip()
        if not item or item == "auto":
            continue
        key, _, value = item.rpartition("=")
        if not key:
            model, part = None, None
        elif ":" in key:
            model, part = key.split(":", 1)
        elif key in MODELS:
            model, part = key, None
        else:
            model, part = None, key
        if (
            (part is not None and part not in PARTS)
            or (model is not None and model not in MODELS)
            or not value.isdigit()
        ):
            raise SystemExit(f"--batch-size: cannot parse {item!r}")
        table[(model or None, part or None)] = int(value)
    return table


def batch_size(settings: Settings, model: str | None, part: str) -> int:
    table = settings.batch_spec
    for key in ((model, part), (model, None), (None, part), (None, None)):
        if key in table:
            return table[key]
    accel = settings.platform != "cpu"
    return {
        "infer": 256 if accel else 8,
        "kd": 128 if accel else 4,
        "input": 256 if accel else 8,
        "flops": 1,
    }[part]


def torch_autocast(settings: Settings, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch_modules().torch.autocast(
        settings.torch_device, dtype=torch_modules().torch.bfloat16
    )


def configure_torch(device: str, cpu_threads: int | None = None) -> dict:
    """No TF32 anywhere: fp32 rows are true fp32; bf16 rows use autocast's bf16 matmuls."""
    torch = torch_modules().torch
    torch.set_float32_matmul_precision("highest")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        with contextlib.suppress(AttributeError, RuntimeError, ValueError):  # torch >= 2.9 API
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.set_num_threads(cpu_threads or available_cores())
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "num_threads": torch.get_num_threads(),
    }


def timm_swin(name: str, *, drop_path: bool = False, num_classes: int = NUM_CLASSES):
    """timm's SwinTransformer with our preset's architecture (random weights, on the CPU)."""
    arch = preset(name)
    return torch_modules().TimmSwin(
        img_size=arch.get("img_size", IMG_SIZE),
        patch_size=arch.get("patch_size", 4),
        embed_dim=arch["embed_dim"],
        depths=tuple(arch["depths"]),
        num_heads=tuple(arch["num_heads"]),
        window_size=arch.get("window_size", 7),
        num_classes=num_classes,
        drop_path_rate=arch.get("drop_path_rate", 0.1) if drop_path else 0.0,
    )


def timm_model(name: str, settings: Settings, *, drop_path: bool):
    """timm_swin on the settings' device, with its attention path and memory format."""
    torch = torch_modules().torch
    model = timm_swin(name, drop_path=drop_path)
    if settings.timm_fused_attn != "default":
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = settings.timm_fused_attn == "on"
    model = model.to(settings.torch_device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def timm_fused_attn_in_use(model) -> bool | None:
    flags = {bool(m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")}
    return flags.pop() if len(flags) == 1 else None


def torch_images(settings: Settings, batch: int, seed: int):
    torch = torch_modules().torch
    x = torch.randn(batch, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(seed))
    x = x.to(settings.torch_device)
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


def maybe_compile(fn, backend: str, settings: Settings):
    if backend == "torch_compile":
        return torch_modules().torch.compile(fn, mode=settings.compile_mode)
    return fn


def release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- infer


def attention_option(attention: str) -> dict:
    """create_model kwargs selecting the window-attention implementation."""
    return {} if attention == DEFAULT_ATTENTION else {"attention": attention}


def flax_label(backend: str, attention: str) -> str:
    return backend if attention == DEFAULT_ATTENTION else f"{backend}[{attention}]"


def infer_flax(
    name: str, precision: str, batch: int, settings: Settings, attention: str = DEFAULT_ATTENTION
) -> dict:
    model = create_model(
        name, num_classes=NUM_CLASSES, dtype=flax_dtype(precision), **attention_option(attention)
    )
    params = init_params(model, 0)
    keys = jax.random.split(jax.random.PRNGKey(1), settings.rotate)
    inputs = [jax.random.normal(k, (batch, IMG_SIZE, IMG_SIZE, 3), jnp.float32) for k in keys]
    with jax_precision(precision):
        start = time.perf_counter()
        fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
        compiled = fn.lower(params, inputs[0]).compile()
        lower_compile_s = time.perf_counter() - start
    timing = measure(
        lambda i: compiled(params, inputs[i % len(inputs)]),
        jax_sync,
        repeats=settings.repeats,
        warmup=settings.warmup,
        min_time=settings.min_time,
    )
    xla = cost_flops(compiled)
    return {
        **summarise(timing, batch),
        "compile_s": round(lower_compile_s, 3),
        "params": count_params(params),
        "xla_flops_per_img": xla / batch if xla else None,
    }


def infer_torch(name: str, precision: str, batch: int, backend: str, settings: Settings) -> dict:
    torch = torch_modules().torch
    model = timm_model(name, settings, drop_path=False).eval()
    fn = maybe_compile(model, backend, settings)
    inputs = [torch_images(settings, batch, seed) for seed in range(settings.rotate)]

    def call(i):
        with torch.inference_mode(), torch_autocast(settings, precision):
            return fn(inputs[i % len(inputs)])

    timing = measure(
        call,
        torch_sync,
        repeats=settings.repeats,
        warmup=settings.warmup,
        min_time=settings.min_time,
    )
    return {
        **summarise(timing, batch),
        "params": sum(p.numel() for p in model.parameters()),
        "timm_fused_attn": timm_fused_attn_in_use(model),
    }


# ----------------------------------------------------------------------------- kd


def kd_flax(
    student_name: str,
    precision: str,
    batch: int,
    settings: Settings,
    pre_resized: bool,
    attention: str = DEFAULT_ATTENTION,
) -> dict:
    """Our jitted distillation step, exactly as the trainer builds it: a resident split's
    batch gathered by `swin_flax.data.feed.batch_gather`, then the step."""
    from swin_flax.data.augment import AugmentConfig
    from swin_flax.data.feed import batch_gather
    from swin_flax.settings import LossSettings
    from swin_flax.training.distributed import batch_sharded, make_mesh, replicated
    from swin_flax.training.optim import make_optimizer
    from swin_flax.training.step import create_train_state, make_train_step

    dtype = flax_dtype(precision)
    student = create_model(
        student_name, num_classes=NUM_CLASSES, dtype=dtype, **attention_option(attention)
    )
    teacher = create_model(
        settings.teacher, num_classes=NUM_CLASSES, dtype=dtype, **attention_option(attention)
    )
    tx, schedule = make_optimizer(
        peak_lr=PEAK_LR, total_steps=10_000, warmup_steps=500, weight_decay=WEIGHT_DECAY
    )
    mesh = make_mesh()
    if pre_resized:  # no crop/flip and no resize: gather + normalise at 224 only
        augment, side, num_images = (
            AugmentConfig(IMG_SIZE, crop_padding=0, flip=False),
            IMG_SIZE,
            batch * settings.rotate,
        )
    else:
        augment, side, num_images = (
            AugmentConfig(IMG_SIZE),
            DATASET_IMAGE_SIZE,
            max(4096, batch * settings.rotate),
        )
    step = make_train_step(
        student=student,
        teacher=teacher,
        tx=tx,
        schedule=schedule,
        loss_settings=LossSettings(joint="weighted_harmonic", distillation="mse", w_d=W_D, w_s=W_S),
        total_steps=10_000,
        augment=augment,
        mesh=mesh,
    )

    rep, data = replicated(mesh), batch_sharded(mesh)
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (num_images, side, side, 3), np.uint8), rep)
    labels = jax.device_put(rng.integers(0, NUM_CLASSES, (num_images,), np.int32), rep)
    indices = [
        jax.device_put(rng.permutation(num_images)[:batch].astype(np.int32), data)
        for _ in range(settings.rotate)
    ]
    student_params = init_params(student, 0)
    num_params = count_params(student_params)
    state = jax.device_put(create_train_state(student_params, tx), rep)
    teacher_params = jax.device_put(init_params(teacher, 1), rep)
    del student_params
    base_rng = jax.device_put(jax.random.PRNGKey(2), rep)

    with jax_precision(precision):
        start = time.perf_counter()
        teacher_input = {"params": teacher_params}  # the teacher runs live in the step
        gather = batch_gather(data)
        batch_images, batch_labels = gather(images, labels, indices[0])
        compiled = step.lower(state, teacher_input, batch_images, batch_labels, base_rng).compile()
        lower_compile_s = time.perf_counter() - start

    def call(i):
        nonlocal state
        batch_images, batch_labels = gather(images, labels, indices[i % len(indices)])
        state, metrics, _ = compiled(state, teacher_input, batch_images, batch_labels, base_rng)
        return state, metrics

    timing = measure(
        call, jax_sync, repeats=settings.repeats, warmup=settings.warmup, min_time=settings.min_time
    )
    _, metrics = call(0)
    loss = float(metrics["loss"])
    xla = cost_flops(compiled)
    return {
        **summarise(timing, batch),
        "compile_s": round(lower_compile_s, 3),
        "params": num_params,
        "loss_last": loss,
        "finite": math.isfinite(loss),
        "xla_flops_per_img": xla / batch if xla else None,
    }


def weighted_harmonic_torch(l_d, l_s, w_d: float = W_D, w_s: float = W_S):
    """Paper Eq. 4, (w_d + w_s) / (w_d / L_d + w_s / L_s), written as in swin_flax.training.losses."""
    return (w_d + w_s) * l_d * l_s / (w_d * l_s + w_s * l_d)


def kd_torch(
    student_name: str, precision: str, batch: int, backend: str, settings: Settings
) -> dict:
    """The same step in PyTorch: frozen teacher (eval, no_grad), student in train mode,
    MSE + CE joined by the weighted harmonic mean, AdamW (decay on weight matrices only),
    warmup-cosine LR, gradient norm as a metric. Input: a pre-made 224 float batch."""
    torch, F = torch_modules().torch, torch_modules().F
    device = settings.torch_device
    teacher = timm_model(settings.teacher, settings, drop_path=False).eval()
    teacher.requires_grad_(False)
    student = timm_model(student_name, settings, drop_path=True).train()

    decay = [
        p
        for n, p in student.named_parameters()
        if p.ndim > 1 and not n.endswith("relative_position_bias_table")
    ]
    no_decay = [
        p
        for n, p in student.named_parameters()
        if not (p.ndim > 1 and not n.endswith("relative_position_bias_table"))
    ]
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        optimizer = torch.optim.AdamW(groups, lr=PEAK_LR, fused=True)
        fused = True
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(groups, lr=PEAK_LR)
        fused = False
    warmup, total = 500, 10_000

    def warmup_cosine(step):
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)

    def forward_loss(x, y):
        with torch_autocast(settings, precision):
            with torch.no_grad():
                teacher_logits = teacher(x)
            logits = student(x)
        logits, teacher_logits = logits.float(), teacher_logits.float()
        l_d = F.mse_loss(logits, teacher_logits)
        l_s = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(-1) == y).float().mean()
        return weighted_harmonic_torch(l_d, l_s), accuracy

    forward_loss_fn = maybe_compile(forward_loss, backend, settings)
    params = [p for p in student.parameters()]
    inputs = [torch_images(settings, batch, seed) for seed in range(settings.rotate)]
    g = torch.Generator().manual_seed(0)
    labels = [
        torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
        for _ in range(settings.rotate)
    ]

    def call(i):
        loss, accuracy = forward_loss_fn(inputs[i % len(inputs)], labels[i % len(labels)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        optimizer.step()
        scheduler.step()
        return loss.detach(), accuracy, grad_norm

    timing = measure(
        call,
        torch_sync,
        repeats=settings.repeats,
        warmup=settings.warmup,
        min_time=settings.min_time,
    )
    loss = float(call(0)[0])
    return {
        **summarise(timing, batch),
        "params": sum(p.numel() for p in params),
        "loss_last": loss,
        "finite": math.isfinite(loss),
        "adamw_fused": fused,
        "timm_fused_attn": timm_fused_attn_in_use(student),
    }


# ----------------------------------------------------------------------------- input, flops


def input_flax(precision: str, batch: int, settings: Settings) -> dict:
    """Gather by index + random crop + flip + normalise + bilinear 32->224, jitted."""
    dtype = flax_dtype(precision)
    rng = np.random.default_rng(0)
    num_images = max(4096, batch * settings.rotate)
    images = jnp.asarray(
        rng.integers(0, 256, (num_images, DATASET_IMAGE_SIZE, DATASET_IMAGE_SIZE, 3), np.uint8)
    )
    indices = [
        jnp.asarray(rng.permutation(num_images)[:batch].astype(np.int32))
        for _ in range(settings.rotate)
    ]
    keys = jax.random.split(jax.random.PRNGKey(0), settings.rotate)

    def path(images, idx, key):
        return augment_batch(images[idx], key, out_size=IMG_SIZE, dtype=dtype)

    with jax_precision(precision):
        start = time.perf_counter()
        compiled = jax.jit(path).lower(images, indices[0], keys[0]).compile()
        lower_compile_s = time.perf_counter() - start
    timing = measure(
        lambda i: compiled(images, indices[i % len(indices)], keys[i % len(keys)]),
        jax_sync,
        repeats=settings.repeats,
        warmup=settings.warmup,
        min_time=settings.min_time,
    )
    xla = cost_flops(compiled)
    return {
        **summarise(timing, batch),
        "compile_s": round(lower_compile_s, 3),
        "xla_flops_per_img": xla / batch if xla else None,
    }


def flops_crosscheck(name: str) -> dict:
    """Analytic forward FLOPs vs XLA cost analysis (fp32, batch 1) vs torch FlopCounterMode."""
    out = {
        "analytic_macs": swin_forward_macs(**preset(name)),
        "analytic_flops": forward_flops(name),
    }
    model = create_model(name, num_classes=NUM_CLASSES)
    params = init_params(model, 0)
    x = jnp.zeros((1, IMG_SIZE, IMG_SIZE, 3), jnp.float32)
    with jax_precision("fp32"):
        compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, x).compile()
    out["xla_flops"] = cost_flops(compiled)
    torch = torch_modules().torch
    if torch is not None:
        from torch.utils.flop_counter import FlopCounterMode

        tmodel = timm_swin(name).eval()
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            tmodel(torch.randn(1, 3, IMG_SIZE, IMG_SIZE))
        out["torch_flop_counter"] = float(counter.get_total_flops())
    return out


def environment(
    settings: Settings, torch_config: dict | None, cpu_threads: int | None = None
) -> dict:
    def version(module):
        return getattr(module, "__version__", None) if module is not None else None

    import flax
    import optax

    tm = torch_modules()
    torch = tm.torch
    device = jax.devices()[0]
    env = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_identity": cpu_identity(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": cpu_threads,
        "cpu_affinity": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "jax_backend": settings.platform,
        "jax_device_kind": device.device_kind,
        "jax_devices": len(jax.devices()),
        "versions": {
            "jax": jax.__version__,
            "jaxlib": version(sys.modules.get("jaxlib")),
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "torch": version(torch),
            "timm": version(tm.timm),
        },
        "torch_device": settings.torch_device,
        "torch_import_error": tm.error,
        "torch_config": torch_config,
        "xla_env": {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_"))},
        "git_commit": git_commit(),
        "load_average_start": os.getloadavg(),
        "precision_note": (
            "fp32: float32 compute on both sides (JAX jax_default_matmul_precision='highest'; "
            "torch TF32 off for matmul and cuDNN, float32_matmul_precision='highest'). "
            "bf16: bf16 compute with float32 parameters on both sides (Flax dtype=bfloat16 "
            "with float32 params; torch AMP autocast bf16 with float32 params). "
            f"torch channels_last={settings.channels_last}."
        ),
    }
    if torch is not None and settings.torch_device == "cuda":
        env["torch_cuda_device"] = torch.cuda.get_device_name(0)
        env["torch_cuda"] = torch.version.cuda
    return env
