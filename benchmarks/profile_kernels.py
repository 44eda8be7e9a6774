"""Where does a jitted Swin forward (or KD step) spend its device time? Kernel-level table.

Traces a few calls with `jax.profiler`, then reads the trace back with
`jax.profiler.ProfileData` (no TensorBoard or xprof needed) and prints the kernels that took
the most device time, grouped into classes (GEMM, attention softmax, layout copies, ...).
On CPU the same is done for the HLO ops of XLA's CPU runtime (pin the process to one core
with `taskset -c 0` so that the op times add up to the wall time).
With `--torch` it does the same for timm's model (eager or torch.compile) with
`torch.profiler`, so the two kernel mixes can be compared side by side. On CPU,
`--torch compile` cannot be broken down the same way: Inductor's generated C++ kernels are not
profiler events, so their time shows up as the self time of the `## Call CompiledFxGraph ##`
event, classed "unattributed (compiled graph)"; only the calls it makes into aten/oneDNN (GEMMs)
are attributed. On a GPU every Inductor kernel is its own event.

    python benchmarks/profile_kernels.py --model swin_t --batch-size 256 --precision bf16
    python benchmarks/profile_kernels.py --model swin_t --torch compile

The raw trace stays in --trace-dir for TensorBoard/xprof if more detail is wanted.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import IMG_SIZE, NUM_CLASSES, available_cores, flax_dtype  # noqa: E402


def _words(*names: str) -> str:
    """Any of `names` not inside a longer word: `_`, `:`, `.` and digits separate (aten::mm,
    triton_mm, roll_cuda_kernel), letters do not (so "roll" does not match "unrolled")."""
    return r"(?<![a-z])(" + "|".join(names) + r")(?![a-z])"


# Kernel-name patterns (matched against the lowercased name), first match wins. Names differ
# between XLA (fusion names, cuBLAS / cuDNN / Triton kernel names) and Inductor, hence regexes.
KERNEL_CLASSES = (
    # torch.compile on CPU: Inductor's C++ kernels run inside this event, not as events of
    # their own, so their time cannot be attributed to a class.
    ("unattributed (compiled graph)", r"compiledfxgraph"),
    # Inductor names a kernel by its kind first and then by the aten ops fused into it
    # (triton_poi_fused_addmm_gelu_view_3 is the GELU epilogue, not the GEMM, which is an
    # extern cuBLAS call or a triton_tem_/triton_mm template), so the prefix decides.
    ("gemm", r"^triton_(tem|mm|bmm)"),
    ("elementwise", r"^triton_poi_"),
    ("softmax/reduce", r"^triton_(per|red)_"),
    (
        "gemm",
        r"gemm|cutlass|xmma|cublas|nvjet|ynn_fusion|"
        + _words("addmm", "baddbmm", "bmm", "mm", "matmul", "linear", "convolution", "dot"),
    ),
    ("softmax/reduce", r"softmax|layer_norm|reduce|" + _words("sum", "mean", "amax")),
    # dtype casts, here before the copies so that XLA's loop_convert_fusion and torch's
    # _to_copy land in the same class as Inductor's triton_poi_fused__to_copy_*.
    ("elementwise", r"convert|" + _words("to_copy")),
    (
        "copy/transpose",
        r"transpose|copy|concatenate|nchwtonhwc|nhwctonchw|"
        + _words(
            "roll", "slice", "gather", "index", "pad", "clone", "cat", "permute", "contiguous"
        ),
    ),
    ("elementwise", r"elementwise|vectorized|loop|fusion|add|mul|gelu|" + _words("div")),
)


def classify(name: str) -> str:
    lowered = name.lower()
    for label, pattern in KERNEL_CLASSES:
        if re.search(pattern, lowered):
            return label
    return "other"


def summarize(durations: dict[str, float], calls: int, top: int, title: str) -> None:
    total = sum(durations.values())
    if not total:
        print(f"\n== {title}: no kernels found in the trace ==")
        return
    print(f"\n== {title}: {total / calls / 1e6:.3f} ms of kernels per call ==")
    by_class = collections.Counter()
    for name, ns in durations.items():
        by_class[classify(name)] += ns
    for label, ns in by_class.most_common():
        print(f"  {label:29s} {ns / calls / 1e6:8.3f} ms  {100 * ns / total:5.1f}%")
    print(f"  top {top} kernels (ms per call, share):")
    for name, ns in sorted(durations.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {ns / calls / 1e6:8.3f}  {100 * ns / total:5.1f}%  {name[:110]}")


# Bookkeeping events of XLA's CPU runtime that are not work on the data.
CPU_RUNTIME_EVENTS = re.compile(r"^(end: |ThreadpoolListener|ThunkExecutor|SlinkyThreadPool)")


def jax_kernel_times(trace_dir: str) -> dict[str, float]:
    """Device time per kernel name; on CPU, time per HLO op of XLA's CPU runtime threads."""
    from jax.profiler import ProfileData

    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise SystemExit(f"no .xplane.pb trace under {trace_dir}")
    data = ProfileData.from_file(files[-1])
    gpu = collections.Counter()
    cpu = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if plane.name.startswith("/device:GPU"):
                # One line per CUDA stream holds the kernels; the "XLA Ops"/"XLA Modules"
                # lines are HLO-level views of the same time and would double count.
                if not (line.name.startswith("XLA") or "Ops" in line.name):
                    for event in line.events:
                        gpu[event.name] += event.duration_ns
            elif plane.name == "/host:CPU" and line.name.startswith("tf_XLA"):
                for event in line.events:
                    if not CPU_RUNTIME_EVENTS.match(event.name):
                        cpu[event.name] += event.duration_ns
    return gpu or cpu


def profile_jax(args) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from swin_flax.model import presets

    model = presets.create_model(
        args.model,
        num_classes=NUM_CLASSES,
        dtype=flax_dtype(args.precision),
        attention=args.attention,
    )
    params = jax.device_put(
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, IMG_SIZE, IMG_SIZE, 3)))["params"]
    )
    images = jax.device_put(
        np.random.default_rng(0).standard_normal(
            (args.batch_size, IMG_SIZE, IMG_SIZE, 3), np.float32
        )
    )
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    for _ in range(3):
        forward(params, images).block_until_ready()
    start = time.perf_counter()
    for _ in range(args.calls):
        out = forward(params, images)
    out.block_until_ready()
    wall = (time.perf_counter() - start) / args.calls
    print(
        f"flax {args.model} {args.precision} batch {args.batch_size}: {wall * 1e3:.3f} ms/call, "
        f"{args.batch_size / wall:,.0f} img/s (untraced)"
    )
    with jax.profiler.trace(args.trace_dir):
        for _ in range(args.calls):
            out = forward(params, images)
        out.block_until_ready()
    summarize(jax_kernel_times(args.trace_dir), args.calls, args.top, f"flax {args.model}")


def profile_torch(args) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.workloads import timm_swin

    model = timm_swin(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # one thread per core this process may use (taskset), as XLA does
        torch.set_num_threads(available_cores())
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    if args.torch == "compile":
        model = torch.compile(model)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    images = torch.randn(args.batch_size, 3, IMG_SIZE, IMG_SIZE, device=device).to(
        memory_format=torch.channels_last
    )
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    with torch.inference_mode(), autocast:
        for _ in range(3):
            model(images)
        sync()
        start = time.perf_counter()
        for _ in range(args.calls):
            model(images)
        sync()
        wall = (time.perf_counter() - start) / args.calls
        print(
            f"torch {args.torch} {args.model} {args.precision} batch {args.batch_size}: "
            f"{wall * 1e3:.3f} ms/call, {args.batch_size / wall:,.0f} img/s (untraced)"
        )
        activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
        with profile(activities=[activity]) as prof:
            for _ in range(args.calls):
                model(images)
            sync()
    durations = collections.Counter()
    for event in prof.key_averages():
        if device == "cuda":  # kernels only: their self time is device time (microseconds)
            if event.device_type.name == "CUDA":
                durations[event.key] += 1000 * event.self_device_time_total
        else:
            durations[event.key] += 1000 * event.self_cpu_time_total
    summarize(durations, args.calls, args.top, f"torch {args.torch} {args.model}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="swin_t")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--attention", default="einsum")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--torch",
        choices=("eager", "compile"),
        default=None,
        help="profile timm's model instead of the Flax one",
    )
    parser.add_argument("--trace-dir", default="/tmp/swin_flax_trace")
    args = parser.parse_args()
    if args.torch:
        profile_torch(args)
    else:
        profile_jax(args)


if __name__ == "__main__":
    main()
