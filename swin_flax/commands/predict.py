"""Top-5 classes of images with a checkpoint or an exported model.

    python predict.py MODEL image.jpg [image2.png ...] [DIR ...] [--top K] [--threads N]

MODEL: a swin_flax checkpoint directory (a run's STAGE/final_model, or the stage directory
itself), or a file written by export.py (.onnx, .tflite, StableHLO zip). A DIR stands for
every image file under it (searched recursively, in sorted order). Images are preprocessed
as training evaluated them: RGB, resized to the stored size training used (when the model
records one), then bilinear to the model's img_size, ImageNet mean/std. Classes are printed
by name when the model stores them (every stage of train.py does), else as class indices.

An image that cannot be read is one `error:` line on stderr; the others are still
predicted, and the exit code is 2 when any image failed (0 when all were predicted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swin_flax import cli

CHUNK = 32  # images decoded and predicted together


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint directory or exported model file")
    parser.add_argument("images", nargs="+", help="image files, or folders of images")
    parser.add_argument("--top", type=int, default=5, help="classes shown per image")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of onnxruntime / LiteRT (default: theirs)",
    )
    return parser.parse_args(argv)


def image_paths(arguments: list[str]) -> list[Path]:
    """The files given, with every folder replaced by the image files under it."""
    from swin_flax.data.folder_listing import IMAGE_EXTENSIONS
    from swin_flax.errors import UserInputError

    paths = []
    for argument in map(Path, arguments):
        if not argument.is_dir():
            paths.append(argument)
            continue
        found = sorted(
            p
            for p in argument.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(argument).parts)
        )
        if not found:
            raise UserInputError(
                f"{argument} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, "
                "in it and its subfolders)"
            )
        paths += found
    return paths


def main(argv) -> int:
    args = parse_args(argv)
    from swin_flax.deploy.runners import load_model, top_k
    from swin_flax.errors import BadImagesError

    paths = image_paths(args.images)
    runner = load_model(args.model, args.threads)
    pre, names = runner.preprocessing, runner.class_names or []
    if not names:
        cli.note(f"{args.model} stores no class names: classes are shown by their index")
    failed = 0
    for start in range(0, len(paths), CHUNK):  # a bad image is named and the others go on
        decoded = []
        for path in paths[start : start + CHUNK]:
            try:
                decoded.append((path, pre.decode(path)))
            except BadImagesError as err:
                failed += 1
                cli.report_error(str(err))
        if not decoded:
            continue
        logits = runner(pre([image for _, image in decoded]))
        for (path, _), best in zip(decoded, top_k(logits, max(1, args.top))):
            print(path)
            for rank, (index, prob) in enumerate(best, 1):
                label = f"{names[index]} ({index})" if index < len(names) else f"class {index}"
                print(f"  {rank}. {prob:7.2%}  {label}", flush=True)
    return cli.USAGE_EXIT_CODE if failed else 0


def run() -> None:
    """The `swin-flax-predict` command (and `python predict.py`)."""
    cli.exit_tool(cli.run(main, sys.argv[1:]))
