"""Throughput of swin_flax against PyTorch/timm on the same device (paper Table X).

Measures, in one process on one device:

  infer  inference img/s of Swin-N/M/T/S/B at 224 with a 100-class head:
         Flax (jitted `model.apply(..., train=False)`) vs timm eager vs timm torch.compile;
  kd     the distillation train step (Swin-T teacher forward + student forward/backward +
         AdamW, MSE + weighted-harmonic loss, w_d=13, w_s=1): our jitted `make_train_step`
         step, whose input is the uint8 32x32 data set gathered, augmented and resized to
         224 on the device (backend `flax`), the same step fed 224x224 uint8 images with no
         crop/flip/resize (`flax_pre224`, optional), and an equivalent PyTorch step on timm
         models fed a pre-made 224 float batch (`torch_eager`, `torch_compile`);
  input  the on-device input path alone (gather + crop + flip + normalise + resize 32->224);
  flops  (opt-in) forward FLOPs per image: analytic count vs XLA's cost analysis vs torch's
         FlopCounterMode, at batch 1.

Precision: `fp32` is float32 end to end on both sides (JAX matmul precision 'highest', torch
TF32 off); `bf16` is bf16 compute with float32 parameters on both sides (Flax `dtype=bf16`,
torch AMP autocast bf16 + channels_last).

Examples (see benchmarks/README.md):

    python benchmarks/throughput.py --models swin_n,swin_t --precisions fp32 --batch-size 2 \
        --repeats 3 --parts infer,kd,input --json /tmp/bench_cpu.json
    python benchmarks/throughput.py --report a.json b.json      # merged tables, no run
"""

from __future__ import annotations

import os

# JAX preallocates 75% of GPU memory by default, which would starve torch in the same
# process. Set before jax is imported; an explicit setting in the environment wins.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _early_cpu_threads(argv: list[str]) -> int | None:
    """`--cpu-threads N`, read before jax is imported: XLA's CPU thread pool size is fixed by
    XLA_FLAGS at import time (torch's is set later with torch.set_num_threads)."""
    for i, arg in enumerate(argv):
        if arg == "--cpu-threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--cpu-threads="):
            return int(arg.split("=", 1)[1])
    return None


CPU_THREADS = _early_cpu_threads(__import__("sys").argv)
if CPU_THREADS:
    # XLA sizes its CPU thread pool from the affinity mask; pinning the process to N cores
    # is the one setting that bounds it (torch gets torch.set_num_threads(N) as well).
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CPU_THREADS])
    if CPU_THREADS == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_multi_thread_eigen=false").strip()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# Runnable as `python benchmarks/throughput.py` from the repository root without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swin_flax.augment import augment_batch  # noqa: E402
from swin_flax import model as swin_model  # noqa: E402
from swin_flax.model import count_params, init_params, window_and_shift  # noqa: E402
from swin_flax.registry import create_model, preset  # noqa: E402

try:  # torch/timm are optional: their backends are skipped with a note when missing.
    import timm  # noqa: E402
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
    from timm.models.swin_transformer import SwinTransformer as TimmSwin  # noqa: E402

    TORCH_IMPORT_ERROR = None
except Exception as err:  # ImportError, or a broken CUDA install
    torch = timm = F = TimmSwin = None
    TORCH_IMPORT_ERROR = f"{type(err).__name__}: {err}"

MODELS = ("swin_n", "swin_m", "swin_t", "swin_s", "swin_b")
PARTS = ("infer", "kd", "input", "flops")
PRECISIONS = ("fp32", "bf16")
BACKENDS = ("flax", "flax_pre224", "torch_eager", "torch_compile")
TORCH_BACKENDS = ("torch_eager", "torch_compile")
# Paper Table X (img/s, GPU and batch not stated).
PAPER_IMG_S = {"swin_n": 573.8, "swin_m": 494.5, "swin_t": 422.5, "swin_s": 246.5,
               "swin_b": 165.3}
# Window-attention implementations of the Flax model (its `attention` field), default first.
ATTENTION_IMPLS = tuple(getattr(swin_model, "ATTENTION_IMPLEMENTATIONS", ("einsum",)))
DEFAULT_ATTENTION = getattr(swin_model.SwinTransformer, "attention", "einsum")
IMG_SIZE = 224
NUM_CLASSES = 100
DATASET_IMAGE_SIZE = 32  # CIFAR
# The distillation recipe (paper Sec. IV; DESIGN.md).
W_D, W_S = 13.0, 1.0
PEAK_LR, WEIGHT_DECAY = 2e-4, 0.01
# Dense peak TFLOP/s by device kind (datasheets): (substring of the device name, bf16, fp32
# without TF32). First match wins, so the PCIe H100 comes before the generic H100 (SXM).
PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "fp32": 51.0}),
    ("H100", {"bf16": 989.0, "fp32": 67.0}),
    ("H200", {"bf16": 989.0, "fp32": 67.0}),
    ("A100", {"bf16": 312.0, "fp32": 19.5}),
)


# ----------------------------------------------------------------------------- FLOPs


def swin_forward_macs(*, embed_dim: int, depths, num_heads, img_size: int = IMG_SIZE,
                      patch_size: int = 4, in_chans: int = 3, window_size: int = 7,
                      mlp_ratio: float = 4.0, num_classes: int = NUM_CLASSES,
                      **_) -> dict[str, int]:
    """Multiply-accumulates of one image's forward pass, by kind of matmul/conv.

    Counts what dominates: the patch-embedding conv, qkv, q@k^T and attn@v (each
    tokens x window_tokens x dim per block, whatever the number of heads), the output
    projection, the two MLP layers, patch merging and the head. Norms, softmax, GELU,
    the bias/mask additions and the final pooling are elementwise and left out, as in
    fvcore/timm's published counts (Swin-T 224: 4.5 GMACs).
    """
    del num_heads  # heads split the channels; the MAC count does not depend on them
    res = img_size // patch_size
    dim = embed_dim
    macs = dict.fromkeys(("patch_embed", "qkv", "attn_qk", "attn_av", "proj", "mlp",
                          "patch_merging", "head"), 0)
    macs["patch_embed"] = res * res * patch_size * patch_size * in_chans * dim
    for i, depth in enumerate(depths):
        if i > 0:
            res //= 2
            macs["patch_merging"] += res * res * 4 * dim * 2 * dim
            dim *= 2
        window, _ = window_and_shift(res, window_size, shift=False)
        tokens, window_tokens, hidden = res * res, window * window, int(dim * mlp_ratio)
        macs["qkv"] += depth * tokens * dim * 3 * dim
        macs["attn_qk"] += depth * tokens * window_tokens * dim
        macs["attn_av"] += depth * tokens * window_tokens * dim
        macs["proj"] += depth * tokens * dim * dim
        macs["mlp"] += depth * 2 * tokens * dim * hidden
    macs["head"] = dim * num_classes
    return macs


def forward_flops(name: str) -> float:
    """Model FLOPs (2 x MACs) of one image's forward pass of a registry model at 224."""
    return 2.0 * sum(swin_forward_macs(**preset(name)).values())


def kd_step_flops(teacher: str, student: str) -> float:
    """Teacher forward + student forward and backward (backward ~ 2 x forward)."""
    return forward_flops(teacher) + 3.0 * forward_flops(student)


def default_peaks(device_name: str) -> dict[str, float] | None:
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return dict(peaks)
    return None


def parse_peaks(spec: str | None, device_name: str) -> tuple[dict[str, float] | None, str]:
    """`--peak-tflops`: '989' (every precision) or 'bf16=989,fp32=67'; default by device."""
    if spec:
        if "=" not in spec:
            value = float(spec)
            return {p: value for p in PRECISIONS}, f"--peak-tflops {spec}"
        peaks = {}
        for item in spec.split(","):
            key, value = item.split("=")
            if key.strip() not in PRECISIONS:
                raise SystemExit(f"--peak-tflops: unknown precision {key!r}")
            peaks[key.strip()] = float(value)
        return peaks, f"--peak-tflops {spec}"
    peaks = default_peaks(device_name)
    if peaks is None:
        return None, f"no default peak for {device_name!r}: pass --peak-tflops for MFU"
    return peaks, f"datasheet default for {device_name!r} (dense, fp32 without TF32)"


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Timing:
    compile_s: float
    iters: int  # calls per timed repeat
    seconds: list[float]  # wall time of each repeat


def measure(call: Callable[[int], Any], sync: Callable[[Any], None], *, repeats: int,
            warmup: int, min_time: float) -> Timing:
    """Time `call(i)` (i picks the rotating input): compile and warm-up excluded, synced.

    The first call (compilation, autotuning) is timed separately as `compile_s`; `warmup`
    further calls follow; then enough calls per repeat to last `min_time` seconds, and
    `repeats` repeats, each ended by a device synchronisation.
    """
    counter = 0

    def run(n: int) -> None:
        nonlocal counter
        out = None
        for _ in range(n):
            out = call(counter)
            counter += 1
        sync(out)

    start = time.perf_counter()
    run(1)
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        run(1)
    start = time.perf_counter()
    run(1)
    estimate = time.perf_counter() - start
    iters = max(1, min(10_000, math.ceil(min_time / max(estimate, 1e-6))))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(iters)
        seconds.append(time.perf_counter() - start)
    return Timing(compile_s, iters, seconds)


def summarise(timing: Timing, batch: int) -> dict:
    rates = np.array([batch * timing.iters / s for s in timing.seconds])
    q1, med, q3 = np.percentile(rates, [25, 50, 75])
    return {
        "img_s": float(med), "img_s_min": float(rates.min()), "img_s_max": float(rates.max()),
        "img_s_q1": float(q1), "img_s_q3": float(q3), "img_s_each": rates.round(3).tolist(),
        "ms_per_call": 1e3 * float(np.median(timing.seconds)) / timing.iters,
        "iters_per_repeat": timing.iters, "repeats": len(timing.seconds),
        "compile_s": round(timing.compile_s, 3),
    }


# A row whose interquartile range is wider than this (in % of the median) is flagged as noisy:
# on a loaded CPU torch's OpenMP pool alone can swing many-fold between repeats.
NOISY_IQR_PERCENT = 20.0


def iqr_percent(row: dict) -> float:
    """Interquartile range of the per-repeat img/s, in % of the median."""
    return 100 * (row["img_s_q3"] - row["img_s_q1"]) / row["img_s"]


def jax_sync(out) -> None:
    jax.block_until_ready(out)


def torch_sync(_=None) -> None:
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def cost_flops(compiled) -> float | None:
    """XLA's flop count of a compiled executable, where the backend reports one."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


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
        if (part is not None and part not in PARTS) or (model is not None and model not in MODELS) \
                or not value.isdigit():
            raise SystemExit(f"--batch-size: cannot parse {item!r}")
        table[(model or None, part or None)] = int(value)
    return table


def batch_size(settings: Settings, model: str | None, part: str) -> int:
    table = settings.batch_spec
    for key in ((model, part), (model, None), (None, part), (None, None)):
        if key in table:
            return table[key]
    accel = settings.platform != "cpu"
    return {"infer": 256 if accel else 8, "kd": 128 if accel else 4,
            "input": 256 if accel else 8, "flops": 1}[part]


@contextlib.contextmanager
def jax_precision(precision: str):
    """fp32 rows: every f32 matmul/conv at full precision (no TF32 / bf16 passes on GPU/TPU)."""
    if precision == "fp32":
        with jax.default_matmul_precision("highest"):
            yield
    else:
        yield


def flax_dtype(precision: str):
    return jnp.float32 if precision == "fp32" else jnp.bfloat16


def torch_autocast(settings: Settings, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(settings.torch_device, dtype=torch.bfloat16)


def available_cores() -> int:
    """Cores this process may run on. os.cpu_count() counts the machine's cores and ignores
    the affinity mask (taskset), which would oversubscribe torch's thread pool."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configure_torch(device: str) -> dict:
    """No TF32 anywhere: fp32 rows are true fp32; bf16 rows use autocast's bf16 matmuls."""
    torch.set_float32_matmul_precision("highest")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        with contextlib.suppress(AttributeError, RuntimeError, ValueError):  # torch >= 2.9 API
            torch.backends.cuda.matmul.fp32_precision = "ieee"
            torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.set_num_threads(CPU_THREADS or available_cores())
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "num_threads": torch.get_num_threads(),
    }


def timm_model(name: str, settings: Settings, *, drop_path: bool):
    """timm's SwinTransformer with our preset's architecture (random weights)."""
    arch = preset(name)
    model = TimmSwin(img_size=arch.get("img_size", IMG_SIZE), patch_size=arch.get("patch_size", 4),
                     embed_dim=arch["embed_dim"], depths=tuple(arch["depths"]),
                     num_heads=tuple(arch["num_heads"]), window_size=arch.get("window_size", 7),
                     num_classes=NUM_CLASSES,
                     drop_path_rate=arch.get("drop_path_rate", 0.1) if drop_path else 0.0)
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
    x = torch.randn(batch, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(seed))
    x = x.to(settings.torch_device)
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


def maybe_compile(fn, backend: str, settings: Settings):
    if backend == "torch_compile":
        return torch.compile(fn, mode=settings.compile_mode)
    return fn


def release_memory() -> None:
    gc.collect()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- infer


def attention_option(attention: str) -> dict:
    """create_model kwargs selecting the window-attention implementation."""
    return {} if attention == DEFAULT_ATTENTION else {"attention": attention}


def flax_label(backend: str, attention: str) -> str:
    return backend if attention == DEFAULT_ATTENTION else f"{backend}[{attention}]"


def infer_flax(name: str, precision: str, batch: int, settings: Settings,
               attention: str = DEFAULT_ATTENTION) -> dict:
    model = create_model(name, num_classes=NUM_CLASSES, dtype=flax_dtype(precision),
                         **attention_option(attention))
    params = init_params(model, 0)
    keys = jax.random.split(jax.random.PRNGKey(1), settings.rotate)
    inputs = [jax.random.normal(k, (batch, IMG_SIZE, IMG_SIZE, 3), jnp.float32) for k in keys]
    with jax_precision(precision):
        start = time.perf_counter()
        fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
        compiled = fn.lower(params, inputs[0]).compile()
        lower_compile_s = time.perf_counter() - start
    timing = measure(lambda i: compiled(params, inputs[i % len(inputs)]), jax_sync,
                     repeats=settings.repeats, warmup=settings.warmup, min_time=settings.min_time)
    xla = cost_flops(compiled)
    return {**summarise(timing, batch), "compile_s": round(lower_compile_s, 3),
            "params": count_params(params),
            "xla_flops_per_img": xla / batch if xla else None}


def infer_torch(name: str, precision: str, batch: int, backend: str, settings: Settings) -> dict:
    model = timm_model(name, settings, drop_path=False).eval()
    fn = maybe_compile(model, backend, settings)
    inputs = [torch_images(settings, batch, seed) for seed in range(settings.rotate)]

    def call(i):
        with torch.inference_mode(), torch_autocast(settings, precision):
            return fn(inputs[i % len(inputs)])

    timing = measure(call, torch_sync, repeats=settings.repeats, warmup=settings.warmup,
                     min_time=settings.min_time)
    return {**summarise(timing, batch), "params": sum(p.numel() for p in model.parameters()),
            "timm_fused_attn": timm_fused_attn_in_use(model)}


# ----------------------------------------------------------------------------- kd


def kd_flax(student_name: str, precision: str, batch: int, settings: Settings,
            pre_resized: bool, attention: str = DEFAULT_ATTENTION) -> dict:
    """Our jitted distillation step, exactly as the trainer builds it."""
    from swin_flax.optim import make_optimizer
    from swin_flax.sharding import batch_sharded, make_mesh, replicated
    from swin_flax.train_step import (AugmentConfig, LossConfig, create_train_state,
                                      make_train_step)

    dtype = flax_dtype(precision)
    student = create_model(student_name, num_classes=NUM_CLASSES, dtype=dtype,
                           **attention_option(attention))
    teacher = create_model(settings.teacher, num_classes=NUM_CLASSES, dtype=dtype,
                           **attention_option(attention))
    tx, schedule = make_optimizer(peak_lr=PEAK_LR, total_steps=10_000, warmup_steps=500,
                                  weight_decay=WEIGHT_DECAY)
    mesh = make_mesh()
    if pre_resized:  # no crop/flip and no resize: gather + normalise at 224 only
        augment, side, num_images = AugmentConfig(IMG_SIZE, crop_padding=0, flip=False), \
            IMG_SIZE, batch * settings.rotate
    else:
        augment, side, num_images = AugmentConfig(IMG_SIZE), DATASET_IMAGE_SIZE, \
            max(4096, batch * settings.rotate)
    step = make_train_step(
        student=student, teacher=teacher, tx=tx, schedule=schedule,
        loss_config=LossConfig(joint="weighted_harmonic", distillation="mse", w_d=W_D, w_s=W_S),
        augment=augment, mesh=mesh)

    rep, data = replicated(mesh), batch_sharded(mesh)
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (num_images, side, side, 3), np.uint8), rep)
    labels = jax.device_put(rng.integers(0, NUM_CLASSES, (num_images,), np.int32), rep)
    indices = [jax.device_put(rng.permutation(num_images)[:batch].astype(np.int32), data)
               for _ in range(settings.rotate)]
    student_params = init_params(student, 0)
    num_params = count_params(student_params)
    state = jax.device_put(create_train_state(student_params, tx), rep)
    teacher_params = jax.device_put(init_params(teacher, 1), rep)
    del student_params
    base_rng = jax.device_put(jax.random.PRNGKey(2), rep)

    with jax_precision(precision):
        start = time.perf_counter()
        compiled = step.lower(state, teacher_params, images, labels, indices[0],
                              base_rng).compile()
        lower_compile_s = time.perf_counter() - start

    def call(i):
        nonlocal state
        state, metrics = compiled(state, teacher_params, images, labels,
                                  indices[i % len(indices)], base_rng)
        return state, metrics

    timing = measure(call, jax_sync, repeats=settings.repeats, warmup=settings.warmup,
                     min_time=settings.min_time)
    _, metrics = call(0)
    loss = float(metrics["loss"])
    xla = cost_flops(compiled)
    return {**summarise(timing, batch), "compile_s": round(lower_compile_s, 3),
            "params": num_params, "loss_last": loss, "finite": math.isfinite(loss),
            "xla_flops_per_img": xla / batch if xla else None}


def weighted_harmonic_torch(l_d, l_s, w_d: float = W_D, w_s: float = W_S):
    """Paper Eq. 4, (w_d + w_s) / (w_d / L_d + w_s / L_s), written as in swin_flax.losses."""
    return (w_d + w_s) * l_d * l_s / (w_d * l_s + w_s * l_d)


def kd_torch(student_name: str, precision: str, batch: int, backend: str,
             settings: Settings) -> dict:
    """The same step in PyTorch: frozen teacher (eval, no_grad), student in train mode,
    MSE + CE joined by the weighted harmonic mean, AdamW (decay on weight matrices only),
    warmup-cosine LR, gradient norm as a metric. Input: a pre-made 224 float batch."""
    device = settings.torch_device
    teacher = timm_model(settings.teacher, settings, drop_path=False).eval()
    teacher.requires_grad_(False)
    student = timm_model(student_name, settings, drop_path=True).train()

    decay = [p for n, p in student.named_parameters()
             if p.ndim > 1 and not n.endswith("relative_position_bias_table")]
    no_decay = [p for n, p in student.named_parameters()
                if not (p.ndim > 1 and not n.endswith("relative_position_bias_table"))]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY},
              {"params": no_decay, "weight_decay": 0.0}]
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
    labels = [torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
              for _ in range(settings.rotate)]

    def call(i):
        loss, accuracy = forward_loss_fn(inputs[i % len(inputs)], labels[i % len(labels)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
        optimizer.step()
        scheduler.step()
        return loss.detach(), accuracy, grad_norm

    timing = measure(call, torch_sync, repeats=settings.repeats, warmup=settings.warmup,
                     min_time=settings.min_time)
    loss = float(call(0)[0])
    return {**summarise(timing, batch), "params": sum(p.numel() for p in params),
            "loss_last": loss, "finite": math.isfinite(loss), "adamw_fused": fused,
            "timm_fused_attn": timm_fused_attn_in_use(student)}


# ----------------------------------------------------------------------------- input, flops


def input_flax(precision: str, batch: int, settings: Settings) -> dict:
    """Gather by index + random crop + flip + normalise + bilinear 32->224, jitted."""
    dtype = flax_dtype(precision)
    rng = np.random.default_rng(0)
    num_images = max(4096, batch * settings.rotate)
    images = jnp.asarray(rng.integers(0, 256, (num_images, DATASET_IMAGE_SIZE,
                                               DATASET_IMAGE_SIZE, 3), np.uint8))
    indices = [jnp.asarray(rng.permutation(num_images)[:batch].astype(np.int32))
               for _ in range(settings.rotate)]
    keys = jax.random.split(jax.random.PRNGKey(0), settings.rotate)

    def path(images, idx, key):
        return augment_batch(images[idx], key, out_size=IMG_SIZE, dtype=dtype)

    with jax_precision(precision):
        start = time.perf_counter()
        compiled = jax.jit(path).lower(images, indices[0], keys[0]).compile()
        lower_compile_s = time.perf_counter() - start
    timing = measure(lambda i: compiled(images, indices[i % len(indices)], keys[i % len(keys)]),
                     jax_sync, repeats=settings.repeats, warmup=settings.warmup,
                     min_time=settings.min_time)
    xla = cost_flops(compiled)
    return {**summarise(timing, batch), "compile_s": round(lower_compile_s, 3),
            "xla_flops_per_img": xla / batch if xla else None}


def flops_crosscheck(name: str) -> dict:
    """Analytic forward FLOPs vs XLA cost analysis (fp32, batch 1) vs torch FlopCounterMode."""
    out = {"analytic_macs": swin_forward_macs(**preset(name)),
           "analytic_flops": forward_flops(name)}
    model = create_model(name, num_classes=NUM_CLASSES)
    params = init_params(model, 0)
    x = jnp.zeros((1, IMG_SIZE, IMG_SIZE, 3), jnp.float32)
    with jax_precision("fp32"):
        compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, x).compile()
    out["xla_flops"] = cost_flops(compiled)
    if torch is not None:
        from torch.utils.flop_counter import FlopCounterMode

        arch = preset(name)
        tmodel = TimmSwin(embed_dim=arch["embed_dim"], depths=tuple(arch["depths"]),
                          num_heads=tuple(arch["num_heads"]), num_classes=NUM_CLASSES).eval()
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            tmodel(torch.randn(1, 3, IMG_SIZE, IMG_SIZE))
        out["torch_flop_counter"] = float(counter.get_total_flops())
    return out


# ----------------------------------------------------------------------------- environment


def environment(settings: Settings, torch_config: dict | None) -> dict:
    def version(module):
        return getattr(module, "__version__", None) if module is not None else None

    import flax
    import optax

    device = jax.devices()[0]
    env = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "python": platform.python_version(),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_threads": CPU_THREADS,
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else None,
        "jax_backend": settings.platform, "jax_device_kind": device.device_kind,
        "jax_devices": len(jax.devices()),
        "versions": {"jax": jax.__version__, "jaxlib": version(sys.modules.get("jaxlib")),
                     "flax": flax.__version__, "optax": optax.__version__,
                     "numpy": np.__version__, "torch": version(torch), "timm": version(timm)},
        "torch_device": settings.torch_device, "torch_import_error": TORCH_IMPORT_ERROR,
        "torch_config": torch_config,
        "xla_env": {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_"))},
        "git_commit": git_commit(),
        "load_average_start": os.getloadavg(),
        "precision_note": (
            "fp32: float32 compute on both sides (JAX jax_default_matmul_precision='highest'; "
            "torch TF32 off for matmul and cuDNN, float32_matmul_precision='highest'). "
            "bf16: bf16 compute with float32 parameters on both sides (Flax dtype=bfloat16 "
            "with float32 params; torch AMP autocast bf16 with float32 params). "
            f"torch channels_last={settings.channels_last}."),
    }
    if torch is not None and settings.torch_device == "cuda":
        env["torch_cuda_device"] = torch.cuda.get_device_name(0)
        env["torch_cuda"] = torch.version.cuda
    return env


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except Exception:
        return None


def device_name(env: dict) -> str:
    if env["jax_backend"] == "cpu":
        threads = (env.get("cpu_threads") or len(env.get("cpu_affinity") or [])
                   or env["cpu_count"])
        return f"CPU {env['cpu']} ({env['cpu_count']} cores, {threads} threads used)"
    return env["jax_device_kind"]


# ----------------------------------------------------------------------------- reporting


def fmt(value, spec=".1f", none="-") -> str:
    return none if value is None else format(value, spec)


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "img_s" not in a or "img_s" not in b:
        return "-"
    return f"{a['img_s'] / b['img_s']:.2f}"


def print_variants(results: list[dict], by_key: dict, part: str) -> None:
    """Rows of non-default Flax attention implementations, against flax/eager/compile."""
    rows = [r for r in results if r["part"] == part and "[" in r["backend"] and "img_s" in r]
    for r in rows:
        base = r["backend"].split("[")[0]
        ref, e, c = (by_key.get((part, r["model"], r["precision"], b))
                     for b in (base, "torch_eager", "torch_compile"))
        print(f"  {r['model']:7} {r['precision']:5} {r['backend']:20} {r['img_s']:9.1f} img/s"
              f"  vs {base} {ratio(r, ref)}  vs eager {ratio(r, e)}  vs compile {ratio(r, c)}")


def print_report(results: list[dict], envs: list[dict]) -> None:
    by_key = {(r["part"], r.get("model"), r["precision"], r["backend"]): r for r in results}
    for env in envs:
        print(f"\n# device: {device_name(env)}; jax {env['versions']['jax']}, "
              f"torch {env['versions']['torch']}, timm {env['versions']['timm']}")
        print(f"# command: {env['command']}")
    if envs:
        print(f"# {envs[-1]['precision_note']}")

    print("\n## all measurements (img/s: median [min, max] over repeats; IQR in %)")
    head = (f"{'part':6} {'model':7} {'prec':5} {'backend':20} {'batch':>5} {'img/s':>9} "
            f"{'min':>9} {'max':>9} {'IQR%':>5} {'ms/call':>9} {'GFLOP/img':>9} "
            f"{'TFLOP/s':>8} {'MFU%':>6} {'compile_s':>9}")
    print(head)
    for r in results:
        if r["part"] == "flops":
            continue
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            print(f"{r['part']:6} {r.get('model') or '-':7} {r['precision']:5} "
                  f"{r['backend']:20} {'':>5} {'-- ' + why[:100]}")
            continue
        iqr = iqr_percent(r)
        gflop = r.get("flops_per_img")
        print(f"{r['part']:6} {r.get('model') or '-':7} {r['precision']:5} {r['backend']:20} "
              f"{r['batch']:>5} {r['img_s']:>9.1f} {r['img_s_min']:>9.1f} {r['img_s_max']:>9.1f} "
              f"{iqr:>5.1f} {r['ms_per_call']:>9.2f} {fmt(gflop and gflop / 1e9, '.2f'):>9} "
              f"{fmt(r.get('tflop_s'), '.2f'):>8} {fmt(r.get('mfu') and 100 * r['mfu'], '.1f'):>6} "
              f"{r['compile_s']:>9.1f}")

    precisions = [p for p in PRECISIONS
                  if any(r["precision"] == p and r["part"] != "flops" for r in results)]
    infer_models = [m for m in MODELS if any(r["part"] == "infer" and r.get("model") == m
                                             for r in results)]
    if infer_models:
        print("\n## Table X: inference throughput, 224x224, 100 classes (img/s, median)")
        cols = "".join(f" | {p}: {'flax':>8} {'eager':>8} {'compile':>8} {'f/e':>5} {'f/c':>5}"
                       for p in precisions)
        print(f"{'model':7} {'params(M)':>9} {'paper':>6}{cols}")
        for m in infer_models:
            cells, params = "", None
            for p in precisions:
                f, e, c = (by_key.get(("infer", m, p, b)) for b in ("flax", "torch_eager",
                                                                    "torch_compile"))
                params = params or next((x["params"] for x in (f, e, c)
                                         if x and "params" in x), None)
                cells += (f" | {p}: {fmt(f and f.get('img_s')):>8} {fmt(e and e.get('img_s')):>8} "
                          f"{fmt(c and c.get('img_s')):>8} {ratio(f, e):>5} {ratio(f, c):>5}")
            print(f"{m:7} {fmt(params and params / 1e6, '.1f'):>9} {PAPER_IMG_S[m]:>6}{cells}")
        print("f/e = flax / torch_eager, f/c = flax / torch_compile; paper = Table X (GPU unnamed)")
        print_variants(results, by_key, "infer")

    kd_models = [m for m in MODELS if any(r["part"] == "kd" and r.get("model") == m
                                          for r in results)]
    if kd_models:
        print("\n## distillation train step (teacher fwd + student fwd/bwd + AdamW), img/s")
        print(f"{'student':7} {'prec':5} {'flax':>8} {'pre224':>8} {'eager':>8} {'compile':>8} "
              f"{'f/e':>5} {'f/c':>5} {'MFU flax%':>9}")
        for m in kd_models:
            for p in precisions:
                f, f2, e, c = (by_key.get(("kd", m, p, b)) for b in BACKENDS)
                if not any((f, f2, e, c)):
                    continue
                mfu = f.get("mfu") if f else None
                print(f"{m:7} {p:5} {fmt(f and f.get('img_s')):>8} "
                      f"{fmt(f2 and f2.get('img_s')):>8} {fmt(e and e.get('img_s')):>8} "
                      f"{fmt(c and c.get('img_s')):>8} {ratio(f, e):>5} {ratio(f, c):>5} "
                      f"{fmt(mfu and 100 * mfu):>9}")
        print_variants(results, by_key, "kd")
        print("flax includes the on-device input path (gather + augment + 32->224 resize); "
              "pre224 = same step fed 224 uint8 images (gather + normalise only); torch is fed "
              "a pre-made 224 float batch")

    inputs = [r for r in results if r["part"] == "input" and "img_s" in r]
    if inputs:
        print("\n## on-device input path alone (gather + crop + flip + normalise + 32->224)")
        for r in inputs:
            kd = [x for x in results if x["part"] == "kd" and x["backend"] == "flax"
                  and x["precision"] == r["precision"] and "img_s" in x]
            share = "; ".join(f"{x['model']} KD step at {x['img_s']:.1f} img/s -> input path "
                              f"~{100 * x['img_s'] / r['img_s']:.1f}% of step time"
                              for x in kd)
            print(f"{r['precision']:5} batch {r['batch']}: {r['img_s']:.1f} img/s "
                  f"[{r['img_s_min']:.1f}, {r['img_s_max']:.1f}]  {share}")

    flops = [r for r in results if r["part"] == "flops" and "analytic_flops" in r]
    if flops:
        print("\n## forward GFLOP per image at 224 (analytic 2xMACs vs XLA vs torch counter)")
        for r in flops:
            torch_flops = r.get("torch_flop_counter")
            print(f"{r['model']:7} analytic {r['analytic_flops'] / 1e9:7.3f}  "
                  f"xla {fmt(r.get('xla_flops') and r['xla_flops'] / 1e9, '7.3f')}  "
                  f"torch {fmt(torch_flops and torch_flops / 1e9, '7.3f')}")
    print()


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated registry names (default: all five)")
    ap.add_argument("--parts", default="infer,kd,input",
                    help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--precisions", default=None,
                    help="fp32,bf16 (default: both on an accelerator, fp32 on CPU)")
    ap.add_argument("--backends", default="flax,torch_eager,torch_compile",
                    help=f"subset of {','.join(BACKENDS)} (flax_pre224: KD step without the "
                         "32->224 input path)")
    ap.add_argument("--batch-size", default="auto",
                    help="'auto' (accelerator: infer 256, kd 128, input 256; CPU: 8, 4, 8), N, or "
                         "entries like 'kd=64,swin_b=128,swin_s:infer=192'")
    ap.add_argument("--flax-attention", default=DEFAULT_ATTENTION,
                    help=f"Flax window-attention implementations to run, comma-separated, from "
                         f"{','.join(ATTENTION_IMPLS)} (non-default ones are labelled "
                         "flax[impl]; cudnn needs an NVIDIA GPU and bf16)")
    ap.add_argument("--kd-students", default="swin_m,swin_n",
                    help="students for the kd part (those also in --models are run)")
    ap.add_argument("--teacher", default="swin_t")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats (default 7 on an accelerator, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls after the compile")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds per repeat, calls per repeat chosen to fill it "
                         "(default 1.0 on an accelerator, 0 on CPU = one call per repeat)")
    ap.add_argument("--rotate", type=int, default=3, help="distinct input batches cycled through")
    ap.add_argument("--peak-tflops", default=None,
                    help="peak for MFU: '989' or 'bf16=989,fp32=67' (default by device kind)")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--no-channels-last", action="store_true",
                    help="keep torch models and inputs NCHW-contiguous")
    ap.add_argument("--timm-fused-attn", choices=("default", "on", "off"), default="default",
                    help="timm WindowAttention SDPA path (timm's default for Swin is off)")
    ap.add_argument("--cpu-threads", type=int, default=None,
                    help="CPU runs: pin the process to N cores and give torch N threads "
                         "(default: all cores). On a loaded machine use 1: torch's OpenMP pool "
                         "slows down many-fold when one of its threads is descheduled")
    ap.add_argument("--json", default=None, help="write every number and the environment here")
    ap.add_argument("--report", nargs="+", default=None, metavar="JSON",
                    help="print the merged tables of earlier --json files and exit")
    return ap.parse_args(argv)


def split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; valid: {', '.join(allowed)}")
    return items


def report_files(paths: list[str]) -> None:
    results, envs = {}, []
    for path in paths:
        blob = json.loads(Path(path).read_text())
        envs.append(blob["env"])
        for r in blob["results"]:  # later files override earlier ones
            results[(r["part"], r.get("model"), r["precision"], r["backend"])] = r
    print_report(list(results.values()), envs)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        report_files(args.report)
        return
    plat = jax.default_backend()
    accel = plat != "cpu"
    models = split(args.models, MODELS, "models")
    parts = split(args.parts, PARTS, "parts")
    precisions = split(args.precisions or ("fp32,bf16" if accel else "fp32"), PRECISIONS,
                       "precisions")
    backends = split(args.backends, BACKENDS, "backends")

    notes = []
    torch_device = None
    if TORCH_IMPORT_ERROR:
        notes.append(f"torch/timm unavailable ({TORCH_IMPORT_ERROR}): torch backends skipped")
    elif plat == "gpu":
        if torch.cuda.is_available():
            torch_device = "cuda"
        else:
            notes.append("JAX runs on a GPU but torch sees no CUDA device: torch backends "
                         "skipped (the comparison must be on the same device)")
    elif plat == "cpu":
        torch_device = "cpu"
    else:
        notes.append(f"torch has no {plat} backend here: torch backends skipped")
    if torch_device is None:
        backends = [b for b in backends if b not in TORCH_BACKENDS]

    settings = Settings(
        platform=plat, torch_device=torch_device,
        repeats=args.repeats or (7 if accel else 3), warmup=args.warmup,
        min_time=args.min_time if args.min_time is not None else (1.0 if accel else 0.0),
        rotate=max(1, args.rotate), channels_last=not args.no_channels_last,
        compile_mode=args.compile_mode, timm_fused_attn=args.timm_fused_attn,
        teacher=args.teacher, batch_spec=parse_batch_spec(args.batch_size))
    torch_config = configure_torch(torch_device) if torch_device else None
    env = environment(settings, torch_config)
    peaks, peak_source = parse_peaks(args.peak_tflops, env.get("torch_cuda_device")
                                     or env["jax_device_kind"])
    env.update(peak_tflops=peaks, peak_source=peak_source, notes=notes,
               settings=dataclasses.asdict(settings) | {"batch_spec": args.batch_size})

    print(f"device: {device_name(env)}; jax backend {plat}; torch device {torch_device}")
    print(env["precision_note"])
    print(f"MFU peak: {peaks} TFLOP/s ({peak_source})")
    for note in notes:
        print(f"NOTE: {note}")

    attentions = split(args.flax_attention, ATTENTION_IMPLS, "flax attention")
    jobs = []  # (part, model, precision, backend, attention)
    if "flops" in parts:
        jobs += [("flops", m, "fp32", "analysis", None) for m in models]
    if "input" in parts and "flax" in backends:
        jobs += [("input", None, p, "flax", None) for p in precisions]
    if "infer" in parts:
        jobs += [("infer", m, p, b, a) for m in models for p in precisions for b in backends
                 for a in (attentions if b == "flax" else [None]) if b != "flax_pre224"]
    if "kd" in parts:
        students = [m for m in split(args.kd_students, MODELS, "kd students") if m in models]
        if not students:
            print(f"NOTE: kd part: none of --kd-students {args.kd_students} is in --models")
        jobs += [("kd", m, p, b, a) for m in students for p in precisions for b in backends
                 for a in (attentions if b.startswith("flax") else [None])]

    # torch rows first: JAX's GPU allocator keeps the memory it has grown to, while torch hands
    # its cache back (torch.cuda.empty_cache), so torch-after-JAX could run out of memory.
    jobs.sort(key=lambda job: not (job[3] in TORCH_BACKENDS))
    results = []
    t_all = time.perf_counter()
    for part, model, precision, backend, attention in jobs:
        batch = batch_size(settings, model, part)
        label = flax_label(backend, attention) if attention else backend
        record = {"part": part, "model": model, "precision": precision, "backend": label,
                  "batch": batch}
        if attention:
            record["attention"] = attention
        print(f"... {part} {model or ''} {precision} {label} batch {batch}", flush=True)
        start = time.perf_counter()
        try:
            if part == "flops":
                record.update(flops_crosscheck(model))
            elif part == "input":
                record.update(input_flax(precision, batch, settings))
            elif part == "infer" and backend == "flax":
                record.update(infer_flax(model, precision, batch, settings, attention))
            elif part == "infer":
                record.update(infer_torch(model, precision, batch, backend, settings))
            elif backend in ("flax", "flax_pre224"):
                record.update(kd_flax(model, precision, batch, settings,
                                      pre_resized=backend == "flax_pre224", attention=attention))
            else:
                record.update(kd_torch(model, precision, batch, backend, settings))
        except Exception as err:  # keep going: one OOM must not lose the other rows
            traceback.print_exc()
            record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        record["wall_s"] = round(time.perf_counter() - start, 2)
        if "img_s" in record and part in ("infer", "kd"):
            flops = forward_flops(model) if part == "infer" else kd_step_flops(
                settings.teacher, model)
            record["flops_per_img"] = flops
            record["tflop_s"] = record["img_s"] * flops / 1e12
            peak = (peaks or {}).get(precision)
            record["peak_tflops"] = peak
            record["mfu"] = record["tflop_s"] / peak if peak else None
        if "img_s" in record:
            print(f"    {record['img_s']:.1f} img/s [{record['img_s_min']:.1f}, "
                  f"{record['img_s_max']:.1f}], compile {record['compile_s']:.1f}s, "
                  f"wall {record['wall_s']:.1f}s", flush=True)
            warn_if_noisy(record, plat)
        results.append(record)
        write_json(args.json, env, results)  # after every row: a killed run keeps its rows
        release_memory()
    env["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    env["load_average_end"] = os.getloadavg()

    write_json(args.json, env, results)
    print_report(results, [env])
    if args.json:
        print(f"wrote {args.json}")


def warn_if_noisy(record: dict, plat: str) -> None:
    """Flag (in the JSON too) a row whose repeats disagree too much for its median to mean much."""
    iqr = iqr_percent(record)
    if iqr <= NOISY_IQR_PERCENT:
        return
    record["noisy"] = True
    advice = ""
    if plat == "cpu" and CPU_THREADS != 1:
        advice = ("; on a loaded machine rerun with --cpu-threads 1 (torch's thread pool slows "
                  "down many-fold when one of its threads is descheduled)")
    elif plat == "cpu":
        advice = "; the machine is probably loaded (see the load average in the JSON)"
    print(f"    WARNING: noisy row: IQR {iqr:.0f}% of the median (> {NOISY_IQR_PERCENT:.0f}%), "
          f"its img/s and ratios are unreliable{advice}", flush=True)


def write_json(path: str | None, env: dict, results: list[dict]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"env": env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
