"""Peak memory and time of `load_image_folder`, each measurement in a fresh process.

    # 2,000 JPEGs of 500x375 (generated into --root if missing), resized to 32x32,
    # with the loader in the working tree and with the one of the last commit:
    git show HEAD:swin_flax/data/__init__.py > /tmp/data_before.py
    python benchmarks/image_folder_memory.py --image-size 32
    python benchmarks/image_folder_memory.py --image-size 32 --before-module /tmp/data_before.py

    # an existing image folder (here CIFAR-10 as JPEGs), both splits, stored size:
    python benchmarks/image_folder_memory.py --root /tmp/cifar10 --splits train,test --workers 2

Peak memory is `ru_maxrss` at the end minus `ru_maxrss` right after the imports, so it
counts what loading added (the result included), not the Python, numpy and JAX baseline.
Wall times depend on the free cores, so run it on an otherwise idle machine, or read
`cpu_seconds` (user + system time of all threads) too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path("/tmp/swin_flax_image_folder_bench")


def _make_image(rng, width: int, height: int):
    """A photo-like RGB image: smooth colour gradients plus sensor-like noise, so that
    JPEG files have realistic sizes (a flat or pure-noise image would not)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.002, 0.03), rng.uniform(0.002, 0.03), rng.uniform(0, 6.3)
        channels.append(128 + 100 * np.sin(fx * x + phase) * np.cos(fy * y))
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def generate(root: Path, count: int, width: int, height: int, classes: int = 10) -> None:
    """`count` JPEGs (quality 90) in root/train/class_<k>/, unless already there."""
    import numpy as np

    split = root / "train"
    if split.is_dir() and sum(1 for _ in split.glob("*/*.jpg")) == count:
        return
    print(f"generating {count} JPEGs of {width}x{height} in {split}", file=sys.stderr)
    rng = np.random.default_rng(0)
    for index in range(count):
        class_dir = split / f"class_{index % classes}"
        class_dir.mkdir(parents=True, exist_ok=True)
        _make_image(rng, width, height).save(class_dir / f"{index:05d}.jpg", quality=90)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _load_module(before_module: str | None):
    if before_module is None:
        from swin_flax import data

        return data
    spec = importlib.util.spec_from_file_location("data_before", before_module)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> None:
    """One measurement; prints one JSON line."""
    module = _load_module(args.before_module)
    baseline = _max_rss_mb()
    kwargs = {} if args.workers is None else {"workers": args.workers}
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    datasets = [
        module.load_image_folder(args.root, split, args.image_size or None, **kwargs)
        for split in args.splits.split(",")
    ]
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - start_cpu
    print(
        json.dumps(
            {
                "loader": args.before_module or "swin_flax.data",
                "workers": args.workers,
                "splits": args.splits,
                "images": sum(len(ds) for ds in datasets),
                "image_shape": list(datasets[0].images.shape[1:]),
                "result_mb": round(sum(ds.images.nbytes for ds in datasets) / 2**20, 1),
                "peak_rss_mb": round(_max_rss_mb(), 1),
                "peak_rss_added_mb": round(_max_rss_mb() - baseline, 1),
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu_seconds, 2),
                "load_average": round(os.getloadavg()[0], 2),  # others' use of the cores
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--splits", default="train", help="comma-separated split folders")
    parser.add_argument("--image-size", type=int, default=0, help="0: keep the stored size")
    parser.add_argument("--workers", type=int, default=None, help="default: the loader's")
    parser.add_argument("--before-module", help="path of an older data.py to measure instead")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes to run")
    parser.add_argument("--count", type=int, default=2000, help="images to generate")
    parser.add_argument("--generate-size", default="500x375", help="WIDTHxHEIGHT to generate")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.root == DEFAULT_ROOT:
        width, height = (int(side) for side in args.generate_size.split("x"))
        generate(args.root, args.count, width, height)
    command = [sys.executable, __file__, "--child", *sys.argv[1:]]
    for _ in range(args.repeats):
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(result.stderr)
        print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
