"""Peak memory and time of one epoch of input, resident (data.placement=device) against
streamed (stream), and the streaming loader's images/s per decoding thread.

    # one epoch of N CIFAR-10 photos at stored_size 96, each placement in a fresh process:
    python benchmarks/data_memory.py epoch --root /tmp/c10 --images 10000,50000 \
        --stored-size 96 --placements device,stream

    # the loader alone on 224-px JPEGs (made once by upscaling CIFAR-10 into --out):
    python benchmarks/data_memory.py make224 --root /tmp/c10 --out /tmp/stream/c10_224 --count 2000
    python benchmarks/data_memory.py loader --root /tmp/stream/c10_224 --stored-size 224 \
        --workers 1,2

`epoch` runs the project's own path: `open_splits` (the listing, a class-balanced subset of
--images training photos, the placement forced), then `DataFeed.train` over one epoch of
global batches, each consumed by a small jitted reduction (the train step's place, without
a model: what is measured is the input), on this machine's devices. Peak RSS is
`ru_maxrss` of the measuring process: on a CPU backend the "device" copy of a resident split
lives in host memory too, as it does on an accelerator's host while it is put there.
`loader` times `StreamedDataset.local_batches` alone (decode + resize, threads, prefetch):
the images/s a GPU user sets against the step's images/s to size data.workers.
Wall times depend on free cores: the load average is recorded with every row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def epoch_child(args) -> dict:
    import jax
    import jax.numpy as jnp

    from swin_flax.data import open_splits
    from swin_flax.data.feed import DataFeed
    from swin_flax.settings import DataSettings
    from swin_flax.training.distributed import batch_sharded, make_mesh, replicated

    baseline = _max_rss_mb()
    settings = DataSettings(
        source="image_folder",
        root=str(args.root),
        stored_size=args.stored_size,
        train_subset=args.images,
        test_subset=10,
        placement=args.placement,
        workers=args.workers,
        prefetch=args.prefetch,
    )
    start = time.perf_counter()
    splits = open_splits(settings, seed=0)
    opened = time.perf_counter() - start
    mesh = make_mesh()
    feed = DataFeed(splits.train, sharding=batch_sharded(mesh), replicated=replicated(mesh))
    steps = len(splits.train) // args.batch_size
    consume = jax.jit(lambda images, labels: jnp.mean(images, dtype=jnp.float32) + labels[0])
    start = time.perf_counter()
    batches = feed.train(seed=0, batch_size=args.batch_size, start_step=0, stop_step=steps)
    for images, labels in batches:
        consume(images, labels).block_until_ready()
    batches.close()
    epoch = time.perf_counter() - start
    return {
        "placement": args.placement,
        "images": len(splits.train),
        "stored_size": args.stored_size,
        "batch_size": args.batch_size,
        "workers": args.workers or "default",
        "prefetch": args.prefetch,
        "open_s": round(opened, 2),
        "epoch_s": round(epoch, 2),
        "total_s": round(opened + epoch, 2),
        "peak_rss_mb": round(_max_rss_mb(), 1),
        "peak_rss_added_mb": round(_max_rss_mb() - baseline, 1),
    }


def loader_child(args) -> dict:
    import numpy as np

    from swin_flax.data.folder_listing import list_image_folder
    from swin_flax.data.sources import ImageFolderSource
    from swin_flax.data.stream import StreamedDataset

    source = ImageFolderSource(list_image_folder(args.root, "train"), args.stored_size or None)
    data = StreamedDataset(source, range(len(source)), workers=args.workers, prefetch=2)
    order = np.random.default_rng(0).permutation(len(data))
    steps = len(data) // args.batch_size
    batches = data.local_batches(
        lambda s: order[s * args.batch_size : (s + 1) * args.batch_size], 0, steps
    )
    next(batches)  # threads started, first batch decoded: not timed
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    count = sum(len(labels) for _, labels in batches)
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - start_cpu
    batches.close()
    return {
        "images": count,
        "stored_size": args.stored_size,
        "source_side": list(source.image_shape())[:2] if not args.stored_size else "224 jpeg",
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "images_per_s": round(count / seconds, 1),
        "images_per_s_per_worker": round(count / seconds / args.workers, 1),
        # What one fully used core decodes, whatever else runs on the machine.
        "cpu_seconds": round(cpu_seconds, 2),
        "images_per_cpu_second": round(count / cpu_seconds, 1),
    }


def make224(args) -> None:
    """--count CIFAR-10 training photos (equal per class) upscaled to 224x224 JPEGs."""
    from PIL import Image

    classes = sorted(p.name for p in (args.root / "train").iterdir() if p.is_dir())
    per_class = args.count // len(classes)
    for name in classes:
        target = args.out / "train" / name
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((args.root / "train" / name).iterdir())[:per_class]:
            with Image.open(path) as image:
                big = image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
            big.save(target / path.name, quality=90)
    print(f"{per_class * len(classes)} JPEGs of 224x224 in {args.out}/train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("epoch", "loader", "make224"))
    parser.add_argument("--root", type=Path, default=Path("/tmp/c10"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/stream/c10_224"))
    parser.add_argument("--count", type=int, default=2000, help="make224: photos to upscale")
    parser.add_argument(
        "--images", default="10000", help="epoch: training photos, e.g. 10000,50000"
    )
    parser.add_argument("--placements", default="device,stream")
    parser.add_argument("--stored-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", default="0", help="decoding threads (0: the default)")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per setting")
    parser.add_argument("--json", type=Path, help="append every row to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--placement", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "make224":
        make224(args)
        return
    if args.child:
        args.images, args.workers = int(args.images), int(args.workers)
        row = epoch_child(args) if args.mode == "epoch" else loader_child(args)
        print(json.dumps({**row, "load_average": round(os.getloadavg()[0], 2)}))
        return
    runs = (
        [
            ["--images", n, "--placement", p, "--workers", args.workers]
            for n in args.images.split(",")
            for p in args.placements.split(",")
        ]
        if args.mode == "epoch"
        else [["--workers", w] for w in args.workers.split(",")]
    )
    for extra in [run for _ in range(args.repeats) for run in runs]:  # interleaved
        # Each measurement in a fresh process: ru_maxrss is a process's peak.
        command = [sys.executable, __file__, *sys.argv[1:], "--child", *extra]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(result.stderr[-3000:])
        line = result.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(line + "\n")


if __name__ == "__main__":
    main()
