"""Export a swin_flax checkpoint for deployment, checked against the Flax model and
measured on your own images.

    python export.py CHECKPOINT_DIR OUT --format onnx|litert|stablehlo
        [--batch N | --dynamic-batch] [--precision fp32|fp16|int8-weights|int8]
        [--calibration DIR [--calibration-count N] [--calibration-seed S]]
        [--evaluate DIR | --evaluate tfds:NAME[:SPLIT]] [--threads N] [--check-images IMG ...]

CHECKPOINT_DIR: any `swin_flax.load_checkpoint` directory (convert_timm_weights.py's output
or a run's final_model/). OUT: the file written (.onnx, .tflite, or a StableHLO zip).
Input layouts: ONNX NCHW (like timm), LiteRT and StableHLO NHWC; float32 images
normalised with the ImageNet mean/std. The written file is run in its own runtime and
its logits compared with the Flax model's; a mismatch ends with an error (exit 2).
int8 (ONNX, LiteRT) is calibrated on images of --calibration (e.g. the training split);
--evaluate runs the file over every image of a folder of class folders and prints its
top-1 next to the checkpoint's, their agreement, its size and CPU latency.
Needs `pip install -e .[export]`.
"""

from __future__ import annotations

import argparse
import sys

from swin_flax import cli
from swin_flax.deploy.export import export_checkpoint
from swin_flax.deploy.image_sets import DEFAULT_CALIBRATION_COUNT
from swin_flax.deploy.runners import FORMATS, PRECISIONS


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="swin_flax checkpoint directory")
    suffixes = ", ".join(f"{f.suffix} ({name})" for name, f in FORMATS.items())
    parser.add_argument("out", help=f"the file to write; by convention {suffixes}")
    parser.add_argument("--format", required=True, choices=tuple(FORMATS))
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8-weights: int8 weights, float activations; int8: int8 weights and "
        "activations, calibrated on --calibration (ONNX and LiteRT)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help="int8: a folder of representative images (searched recursively), e.g. the "
        "training split",
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=DEFAULT_CALIBRATION_COUNT,
        help=f"images calibrated on (default {DEFAULT_CALIBRATION_COUNT})",
    )
    parser.add_argument("--calibration-seed", type=int, default=0, help="which images (default 0)")
    parser.add_argument(
        "--evaluate",
        metavar="DIR",
        help="run the file over every image of DIR/<class>/* (or tfds:NAME[:SPLIT]) and "
        "report its top-1 next to the checkpoint's",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads when timing (default: the runtime's)"
    )
    parser.add_argument(
        "--check-images",
        nargs="+",
        metavar="IMAGE",
        help="image files for the parity check (default: images of --evaluate or "
        "--calibration, else a synthetic batch)",
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
        calibration=args.calibration,
        calibration_count=args.calibration_count,
        calibration_seed=args.calibration_seed,
        evaluate=args.evaluate,
        threads=args.threads,
    )
    print(report.summary(), flush=True)
    return 0


def run() -> None:
    """The `swin-flax-export` command (and `python export.py`)."""
    cli.exit_tool(cli.run(main, sys.argv[1:]))
