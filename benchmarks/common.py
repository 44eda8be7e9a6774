"""What every benchmark script shares, and nothing that runs when imported: the model list and
run constants, the analytic FLOP model, datasheet peaks, timing and its statistics, the JAX
precision settings and CPU-thread pinning.

Importing this module parses no arguments, touches no environment variable and imports
neither torch nor jax (jax and swin_flax are imported inside the functions that need them),
so a CLI can pin its CPU threads or set XLA flags after importing it and before jax starts.
The measured workloads (Flax and timm models, the KD step) are in `benchmarks.workloads`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("swin_n", "swin_m", "swin_t", "swin_s", "swin_b")
PARTS = ("infer", "kd", "input", "flops")
PRECISIONS = ("fp32", "bf16")
BACKENDS = ("flax", "flax_pre224", "torch_eager", "torch_compile")
TORCH_BACKENDS = ("torch_eager", "torch_compile")
# Paper Table X (img/s, GPU and batch not stated).
PAPER_IMG_S = {"swin_n": 573.8, "swin_m": 494.5, "swin_t": 422.5, "swin_s": 246.5, "swin_b": 165.3}
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


def swin_forward_macs(
    *,
    embed_dim: int,
    depths,
    num_heads,
    img_size: int = IMG_SIZE,
    patch_size: int = 4,
    in_chans: int = 3,
    window_size: int = 7,
    mlp_ratio: float = 4.0,
    num_classes: int = NUM_CLASSES,
    **_,
) -> dict[str, int]:
    """Multiply-accumulates of one image's forward pass, by kind of matmul/conv.

    Counts what dominates: the patch-embedding conv, qkv, q@k^T and attn@v (each
    tokens x window_tokens x dim per block, whatever the number of heads), the output
    projection, the two MLP layers, patch merging and the head. Norms, softmax, GELU,
    the bias/mask additions and the final pooling are elementwise and left out, as in
    fvcore/timm's published counts (Swin-T 224: 4.5 GMACs).
    """
    from swin_flax.model.config import window_and_shift

    del num_heads  # heads split the channels; the MAC count does not depend on them
    res = img_size // patch_size
    dim = embed_dim
    macs = dict.fromkeys(
        ("patch_embed", "qkv", "attn_qk", "attn_av", "proj", "mlp", "patch_merging", "head"), 0
    )
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
    from swin_flax.model.presets import preset

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


def measure(
    call: Callable[[int], Any],
    sync: Callable[[Any], None],
    *,
    repeats: int,
    warmup: int,
    min_time: float,
) -> Timing:
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
        "img_s": float(med),
        "img_s_min": float(rates.min()),
        "img_s_max": float(rates.max()),
        "img_s_q1": float(q1),
        "img_s_q3": float(q3),
        "img_s_each": rates.round(3).tolist(),
        "ms_per_call": 1e3 * float(np.median(timing.seconds)) / timing.iters,
        "iters_per_repeat": timing.iters,
        "repeats": len(timing.seconds),
        "compile_s": round(timing.compile_s, 3),
    }


# A row whose interquartile range is wider than this (in % of the median) is flagged as noisy:
# on a loaded CPU torch's OpenMP pool alone can swing many-fold between repeats.
NOISY_IQR_PERCENT = 20.0


def iqr_percent(row: dict) -> float:
    """Interquartile range of the per-repeat img/s, in % of the median."""
    return 100 * (row["img_s_q3"] - row["img_s_q1"]) / row["img_s"]


def jax_sync(out) -> None:
    import jax

    jax.block_until_ready(out)


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


# ----------------------------------------------------------------------------- precision, CPU


@contextlib.contextmanager
def jax_precision(precision: str):
    """fp32 rows: every f32 matmul/conv at full precision (no TF32 / bf16 passes on GPU/TPU)."""
    import jax

    if precision == "fp32":
        with jax.default_matmul_precision("highest"):
            yield
    else:
        yield


def flax_dtype(precision: str):
    import jax.numpy as jnp

    return jnp.float32 if precision == "fp32" else jnp.bfloat16


def available_cores() -> int:
    """Cores this process may run on. os.cpu_count() counts the machine's cores and ignores
    the affinity mask (taskset), which would oversubscribe torch's thread pool."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def early_cpu_threads(argv: list[str]) -> int | None:
    """`--cpu-threads N` read from argv by hand, for a CLI to call before jax starts: XLA's CPU
    thread pool size is fixed when its backend starts (torch's is set later)."""
    for i, arg in enumerate(argv):
        if arg == "--cpu-threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--cpu-threads="):
            return int(arg.split("=", 1)[1])
    return None


def pin_cpu_threads(threads: int | None) -> None:
    """Bound XLA's CPU thread pool to `threads` cores (no-op for None/0). Call before jax starts."""
    if not threads:
        return
    # XLA sizes its CPU thread pool from the affinity mask; pinning the process to N cores
    # is the one setting that bounds it (torch gets torch.set_num_threads(N) as well).
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    if threads == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# AMD's CPU families by microarchitecture: the cores' FMA width decides the fp32 GEMM
# ceilings of XLA (AVX-512) and of torch's MKL (AVX2 on AMD), and so the CPU flax / eager
# ratio; lscpu names them all "AMD EPYC".
_AMD_FAMILIES = {23: "Zen 1/2", 25: "Zen 3/4", 26: "Zen 5"}  # 0x17, 0x19, 0x1A


def cpu_identity() -> dict:
    """Vendor, family, model and stepping from /proc/cpuinfo, AVX-512 support, and for AMD
    the microarchitecture (family 25 is Zen 3 or, with AVX-512, Zen 4)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor is enough
    except OSError:
        return {"name": platform.processor() or None}
    family, model = int(fields.get("cpu family", -1)), int(fields.get("model", -1))
    identity = {
        "name": fields.get("model name"),
        "vendor": fields.get("vendor_id"),
        "family": family,
        "model": model,
        "stepping": fields.get("stepping"),
        "avx512f": "avx512f" in fields.get("flags", "").split(),
    }
    if identity["vendor"] == "AuthenticAMD" and family in _AMD_FAMILIES:
        zen = _AMD_FAMILIES[family]
        if family == 25:
            zen = "Zen 4" if identity["avx512f"] else "Zen 3"
        identity["microarchitecture"] = zen
    return identity


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except Exception:
        return None


def device_name(env: dict) -> str:
    if env["jax_backend"] == "cpu":
        threads = env.get("cpu_threads") or len(env.get("cpu_affinity") or []) or env["cpu_count"]
        return f"CPU {env['cpu']} ({env['cpu_count']} cores, {threads} threads used)"
    return env["jax_device_kind"]
