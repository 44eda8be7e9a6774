"""CPU latency (batch 1) and throughput (batch 32) of the exported student and teacher.

    python benchmarks/export_latency.py [--threads 2] [--repeats 5] [--out benchmarks/results/export_latency.md]

Student swin_n and teacher swin_t (random weights, 224 px, 100 classes) are exported with
swin_flax.deploy.export (ONNX, LiteRT, StableHLO, fp32, fixed batch) and timed in their runtimes:
onnxruntime, the LiteRT interpreter (XNNPACK), and jax.export's deserialized call (XLA
CPU). Every export is parity-checked first. Reported: median and min-max of `--repeats`
timed runs after one warm-up, with the thread count of each runtime.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"student (swin_n)": "swin_n", "teacher (swin_t)": "swin_t"}


def time_runs(fn, repeats):
    fn()  # warm-up (JIT compile, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def benchmark(threads: int, repeats: int, out: Path) -> str:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import numpy as np

    import swin_flax
    from swin_flax.deploy.export import export_checkpoint
    from swin_flax.deploy.runners import FORMATS, load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in MODELS.items():
            model = swin_flax.create_model(name, num_classes=100, img_size=224)
            ckpt = Path(tmp) / name
            swin_flax.save_checkpoint(ckpt, model, swin_flax.init_params(model, 0))
            for fmt in FORMATS:
                for batch in (1, 32):
                    path = Path(tmp) / f"{name}_b{batch}{FORMATS[fmt].suffix}"
                    report = export_checkpoint(ckpt, path, fmt, batch=batch)
                    runner = load_model(path, threads=threads)
                    images = (
                        np.random.default_rng(0)
                        .normal(size=(batch, 224, 224, 3))
                        .astype(np.float32)
                    )
                    times = time_runs(lambda runner=runner, images=images: runner(images), repeats)
                    median = statistics.median(times)
                    rows.append(
                        (
                            label,
                            fmt,
                            batch,
                            median,
                            min(times),
                            max(times),
                            report.max_abs_diff,
                            runner.info["runtime"],
                        )
                    )
                    print(rows[-1], flush=True)
    lines = [
        "# Export latency on CPU",
        "",
        f"`python benchmarks/export_latency.py --threads {threads} --repeats {repeats}`; "
        f"{os.cpu_count()} CPU cores, {threads} threads per runtime (onnxruntime intra-op, "
        "LiteRT num_threads; XLA CPU uses all cores); random weights, 224 px, 100 classes, fp32, fixed "
        "batch; median (min-max) of the timed runs after one warm-up. Parity: max |logit "
        "difference| against the Flax float32 model on the check images.",
        "",
        "| model | format (runtime) | batch 1 latency, ms | batch 32 throughput, img/s | parity |",
        "|---|---|---|---|---|",
    ]
    for label in MODELS:
        for fmt in FORMATS:
            one = next(r for r in rows if r[0] == label and r[1] == fmt and r[2] == 1)
            many = next(r for r in rows if r[0] == label and r[1] == fmt and r[2] == 32)
            lines.append(
                f"| {label} | {fmt} ({one[7]}) | {one[3] * 1e3:.1f} ({one[4] * 1e3:.1f}-"
                f"{one[5] * 1e3:.1f}) | {32 / many[3]:.1f} ({32 / many[5]:.1f}-{32 / many[4]:.1f}) "
                f"| {max(one[6], many[6]):.1e} |"
            )
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "export_latency.md"
    )
    args = parser.parse_args(argv)
    print(benchmark(args.threads, args.repeats, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
