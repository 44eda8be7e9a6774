"""Carve a smaller image-folder task out of a bigger one: some classes, N images per class.

    python -m swin_flax.data.folder_subset SRC OUT --classes cat,dog --train-per-class 600
        [--test-per-class 0 (all)] [--seed 0] [--copy]

SRC and OUT are `root/<split>/<class>/*` trees (the layout `load_image_folder` reads). The
files of each class are chosen by a seeded shuffle of their sorted names, so the same
arguments give the same subset on any machine; OUT links to them (symlinks) unless
--copy. This is how the README's pretrained-teacher setting splits CIFAR-10 into a source
task (five classes, all their images) and a target task (the other five, a few hundred
training images each).
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from swin_flax.data.folder_listing import IMAGE_EXTENSIONS
from swin_flax.errors import UserInputError

SPLITS = ("train", "test")


def class_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def chosen(files: list[Path], count: int, seed: int) -> list[Path]:
    """`count` of `files` (all when count is 0), in a seeded order independent of the OS."""
    if count <= 0 or count >= len(files):
        return files
    order = np.random.default_rng(seed).permutation(len(files))[:count]
    return [files[i] for i in sorted(order)]


def make_subset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: Sequence[str],
    per_class: dict[str, int],
    seed: int = 0,
    copy: bool = False,
) -> dict[str, int]:
    """Write OUT/<split>/<class>/ for every split of `per_class` (0 = every image); returns
    the number of files per split. Missing classes or splits are one error naming them."""
    source, out = Path(source), Path(out)
    missing = [
        f"{split}/{name}"
        for split in per_class
        for name in classes
        if not (source / split / name).is_dir()
    ]
    if missing:
        raise UserInputError(
            f"{source} has no class folder {', '.join(missing)}; expected "
            f"{source}/<split>/<class>/ for the splits {', '.join(per_class)}"
        )
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"{out} exists and is not empty; choose a new directory")
    counts = {}
    for split, count in per_class.items():
        counts[split] = 0
        for index, name in enumerate(classes):
            target = out / split / name
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen(class_files(source / split / name), count, seed + index):
                if copy:
                    shutil.copy2(path, target / path.name)
                else:
                    (target / path.name).symlink_to(path.resolve())
                counts[split] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swin_flax.data.folder_subset", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", help="an image folder: SRC/<split>/<class>/*")
    parser.add_argument("out", help="the new image folder (must not exist or be empty)")
    parser.add_argument("--classes", required=True, help="comma-separated class folder names")
    parser.add_argument("--train-per-class", type=int, default=0, help="0: every image")
    parser.add_argument("--test-per-class", type=int, default=0, help="0: every image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copy", action="store_true", help="copy files instead of symlinks")
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if not classes:
        raise UserInputError("--classes names no class")
    counts = make_subset(
        args.source,
        args.out,
        classes=classes,
        per_class={"train": args.train_per_class, "test": args.test_per_class},
        seed=args.seed,
        copy=args.copy,
    )
    print(f"{args.out}: " + ", ".join(f"{n} {split} images" for split, n in counts.items()))
    return 0


if __name__ == "__main__":
    import sys

    from swin_flax import cli

    sys.exit(cli.run(main, sys.argv[1:]))
