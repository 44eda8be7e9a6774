"""Top-5 classes of images with a checkpoint or an exported model.

    python predict.py MODEL image.jpg [image2.png ...] [--top K] [--threads N]

MODEL: a swin_flax checkpoint directory, or a file written by export.py (.onnx, .tflite,
StableHLO zip). Images are preprocessed as in training: RGB, bilinear resize to the
model's img_size, ImageNet mean/std. Class names are printed when stored with the model.
"""

from __future__ import annotations

import argparse
import sys

from swin_flax import cli


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint directory or exported model file")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--top", type=int, default=5, help="classes shown per image")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of onnxruntime / LiteRT (default: theirs)",
    )
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    from swin_flax.data.images import decode_image
    from swin_flax.deploy.runners import load_model, preprocess_images, top_k

    decoded = [decode_image(path) for path in args.images]  # bad files fail before loading
    runner = load_model(args.model, args.threads)
    logits = runner(preprocess_images(decoded, runner.img_size))
    names = runner.class_names
    for path, best in zip(args.images, top_k(logits, max(1, args.top))):
        print(path)
        for rank, (index, prob) in enumerate(best, 1):
            label = names[index] if names and index < len(names) else f"class {index}"
            print(f"  {rank}. {prob:7.2%}  {label} ({index})")
    return 0


def run() -> None:
    """The `swin-flax-predict` command (and `python predict.py`)."""
    cli.exit_tool(cli.run(main, sys.argv[1:]))
