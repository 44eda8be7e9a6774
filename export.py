"""Export a swin_flax checkpoint for deployment, checked against the Flax model.

    python export.py CHECKPOINT_DIR OUT --format onnx|litert|stablehlo
        [--batch N | --dynamic-batch] [--precision fp32|fp16] [--check-images IMG ...]

CHECKPOINT_DIR: any `swin_flax.load_checkpoint` directory (convert_timm_weights.py's output
or a run's final_model/). OUT: the file written (.onnx, .tflite, or a StableHLO zip).
Input layouts: ONNX NCHW (like timm), LiteRT and StableHLO NHWC; float32 images
normalised with the ImageNet mean/std. The written file is run in its own runtime and
its logits compared with the Flax model's; a mismatch ends with an error (exit 2).
Needs `pip install -e .[export]`.
"""

from __future__ import annotations

import argparse
import sys

from swin_flax import cli
from swin_flax.deploy.export import PRECISIONS, export_checkpoint
from swin_flax.deploy.runners import FORMATS


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="swin_flax checkpoint directory")
    suffixes = ", ".join(f"{f.suffix} ({name})" for name, f in FORMATS.items())
    parser.add_argument("out", help=f"the file to write; by convention {suffixes}")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS))
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument(
        "--check-images",
        nargs="+",
        metavar="IMAGE",
        help="image files for the parity check (default: the shared "
        "CIFAR-10 photos when present, else a synthetic batch)",
    )
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    report = export_checkpoint(
        args.checkpoint,
        args.out,
        args.format,
        batch=None if args.dynamic_batch else args.batch,
        precision=args.precision,
        check_images=args.check_images,
    )
    print(report.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))
