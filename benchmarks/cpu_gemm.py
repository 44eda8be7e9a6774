"""fp32 GEMM throughput of XLA (jax) and torch on this CPU, at Swin-T's matrix shapes: the
number that decides the CPU flax / timm-eager inference ratio (both are GEMM-bound on CPU).

    python benchmarks/cpu_gemm.py --cpu-threads 1 [--repeats 20] [--json gemm.json]

Prints GFLOP/s per shape and library (median of `repeats` timed calls after warm-up) and the
CPU's identity (vendor, family, model: the microarchitecture, which `lscpu`'s "AMD EPYC"
does not name). A core that runs 512-bit FMAs at full width (AMD Zen 5, Intel server cores)
gives XLA's AVX-512 kernels twice the fp32 FLOPs per cycle of AVX2 code such as torch's MKL
path on AMD; a Zen 4 core executes AVX-512 in two 256-bit halves, so there both libraries
have the same ceiling.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (imports neither jax nor torch)

if __name__ == "__main__":
    common.pin_cpu_threads(common.early_cpu_threads(sys.argv))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

# (M, K, N) of Swin-T's largest GEMMs at batch 8, 224 px: stage-1 MLP (8 x 3136 tokens,
# 96 -> 384 channels) and qkv (96 -> 288); stage-3 MLP (8 x 196 tokens, 384 -> 1536); and a
# square product, the libraries' best case.
SHAPES = ((25088, 96, 384), (25088, 96, 288), (1568, 384, 1536), (2048, 2048, 2048))


def median_seconds(run, repeats: int) -> float:
    run()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def xla_gflops(m: int, k: int, n: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k), np.float32))
    b = jnp.asarray(rng.standard_normal((k, n), np.float32))
    with jax.default_matmul_precision("highest"):
        product = jax.jit(lambda x, y: x @ y)
        seconds = median_seconds(lambda: product(a, b).block_until_ready(), repeats)
    return 2 * m * k * n / seconds / 1e9


def torch_gflops(m: int, k: int, n: int, repeats: int) -> float:
    import torch

    torch.set_float32_matmul_precision("highest")
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((m, k), np.float32))
    b = torch.from_numpy(rng.standard_normal((k, n), np.float32))
    with torch.inference_mode():
        seconds = median_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * m * k * n / seconds / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-threads", type=int, default=None, help="cores used (pinned)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.cpu_threads or common.available_cores())
    record = {
        "cpu": common.cpu_identity(),
        "cpu_threads": args.cpu_threads,
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average_start": os.getloadavg(),
        "rows": [],
    }
    print(f"# {json.dumps(record['cpu'])}; threads {args.cpu_threads}; load {os.getloadavg()}")
    print("M x K x N              xla GFLOP/s   torch GFLOP/s   xla / torch")
    for m, k, n in SHAPES:
        xla, eager = xla_gflops(m, k, n, args.repeats), torch_gflops(m, k, n, args.repeats)
        record["rows"].append({"shape": [m, k, n], "xla_gflops": xla, "torch_gflops": eager})
        print(f"{m:>5} x {k:>4} x {n:>4}   {xla:12.1f}   {eager:13.1f}   {xla / eager:11.2f}")
    record["load_average_end"] = os.getloadavg()
    print(f"# load at the end {record['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
