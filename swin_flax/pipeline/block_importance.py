"""Block importance of a fine-tuned teacher: what each block, and each shifted/unshifted pair,
is worth, measured by skipping it.

    python -m swin_flax.pipeline.block_importance WORKDIR [--out DIR]
    python -m swin_flax.pipeline.block_importance CHECKPOINT --data ROOT --out DIR [--split S]

The images are chosen as the pipeline chooses them, never the test split unless asked: a
work directory's validation carve-out, else a class-balanced subset of its training images;
an image folder's ROOT/validation (or ROOT/val), else a subset of ROOT/train. `--split test`
is possible and is said in the table's source line: blocks chosen by it have seen the test
split. The command never replaces files: WORKDIR's own block_importance.* (the pipeline's)
stay, the table goes to WORKDIR/block_importance_command/ by default, and an --out that
already holds a table is refused before anything is measured.

Skipping a block makes it the identity through its residual connections: both residual
branches (window attention, MLP) end in a linear layer (attn/proj, mlp/fc2) whose weight and
bias are set to zero, so the block adds exactly 0 to the residual stream. Every skip runs
the teacher's own compiled forward pass with other parameters: one compilation for all. In
a stage whose windows shift, each adjacent pair (j, j+1) is skipped too: dropping a pair
keeps the alternation of the blocks after it, so a pair's numbers are those of the student
without it, before training. Each skip is scored on the images by top-1 and by its logits'
distance to the full teacher's: MSE (mean over examples and classes, the paper's
distillation loss) and KL(teacher || skipped) (summed over classes, mean over examples),
the cost `keep_blocks=importance` ranks by.

Written: block_importance.md (the table), .json (the same numbers, a record that
`load_importance` reads back for inspection), .png. The pipeline measures it after
fine-tuning with teacher.block_importance=True (and whenever a student uses
keep_blocks=importance), on the images `measurement_images` picks, and writes them into the
work directory. keep_blocks=importance ranks by that in-run measurement, held in memory
(measured again by every run that needs it), never by a .json on disk, so no file can
change which blocks a student keeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from swin_flax import cli
from swin_flax._files import write_json, write_text
from swin_flax.data import ArrayDataset, balanced_subset, load_image_folder, load_splits
from swin_flax.data.augment import preprocess_eval
from swin_flax.errors import UserInputError
from swin_flax.model.swin import SwinTransformer
from swin_flax.pipeline.results import markdown_table
from swin_flax.settings import RunSettings
from swin_flax.training.distributed import is_main_process
from swin_flax.weights import checkpoint
from swin_flax.weights.keep_blocks import shifted_stages

FILE_STEM = "block_importance"
BRANCH_OUTPUTS = ("attn/proj", "mlp/fc2")  # the last layer of each residual branch
MAX_TRAIN_IMAGES = 2000  # without a validation carve-out: a class-balanced training subset


@dataclasses.dataclass(frozen=True)
class Skip:
    stage: int
    blocks: tuple[int, ...]
    top1: float  # percent
    mse: float
    kl: float

    @property
    def name(self) -> str:
        return f"stage {self.stage}, block{'s' if len(self.blocks) > 1 else ''} " + "+".join(
            map(str, self.blocks)
        )


@dataclasses.dataclass(frozen=True)
class BlockImportance:
    depths: tuple[int, ...]
    shifted: tuple[bool, ...]
    top1: float  # the full teacher's, percent
    images: int
    source: str  # which images: 'validation of WORKDIR', 'ROOT/test', ...
    skips: tuple[Skip, ...]

    def costs(self) -> dict[tuple[int, tuple[int, ...]], float]:
        """(stage, skipped blocks) -> KL to the full teacher: keep_blocks=importance's cost."""
        return {(s.stage, s.blocks): s.kl for s in self.skips}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BlockImportance:
        skips = tuple(Skip(**{**s, "blocks": tuple(s["blocks"])}) for s in d["skips"])
        fields = {k: tuple(d[k]) for k in ("depths", "shifted")}
        return cls(**{**d, **fields, "skips": skips})


def skipped_params(params, stage: int, blocks: Sequence[int]):
    """`params` with the residual branches of these blocks of `stage` zeroed (identity)."""
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    prefixes = [f"layers_{stage}/blocks_{j}/{branch}/" for j in blocks for branch in BRANCH_OUTPUTS]
    missing = [p for p in prefixes if not any(k.startswith(p) for k in flat)]
    if missing:
        raise UserInputError(f"the teacher has no {missing[0].rstrip('/')} to skip")
    return traverse_util.unflatten_dict(
        {
            k: np.zeros_like(v) if any(k.startswith(p) for p in prefixes) else v
            for k, v in flat.items()
        },
        sep="/",
    )


def skip_units(depths: Sequence[int], shifted: Sequence[bool]) -> list[tuple[int, tuple[int, ...]]]:
    """Every block, then (where windows shift) every adjacent pair, stage by stage."""
    units = []
    for s, depth in enumerate(depths):
        units += [(s, (j,)) for j in range(depth)]
        if shifted[s]:
            units += [(s, (j, j + 1)) for j in range(depth - 1)]
    return units


def _logits_fn(model: SwinTransformer, batch_size: int):
    @jax.jit
    def batch_logits(params, images):
        batch = preprocess_eval(images, out_size=model.img_size, dtype=model.dtype)
        return model.apply({"params": params}, batch, train=False)

    def logits(params, images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            padded = np.concatenate([chunk, np.zeros_like(images[: batch_size - len(chunk)])])
            out.append(np.asarray(batch_logits(params, padded), np.float64)[: len(chunk)])
        return np.concatenate(out)

    return logits


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def measure(
    model: SwinTransformer, params, data: ArrayDataset, *, source: str, batch_size: int = 256
) -> BlockImportance:
    """Skip every block and pair of `model` in turn and score each on `data`."""
    if data.num_classes != model.num_classes:
        raise UserInputError(
            f"the images ({source}) have {data.num_classes} classes, the teacher "
            f"{model.num_classes}: measure it on images of its own task"
        )
    params = jax.device_get(params)  # host copies (a mesh-replicated teacher's too), as evaluate
    if not isinstance(data, ArrayDataset):  # streamed: the (small) split decoded here
        data = data.resident()
    logits_of = _logits_fn(model, min(batch_size, len(data)))
    full = logits_of(params, data.images)
    log_p = _log_softmax(full)

    def score(logits: np.ndarray) -> tuple[float, float, float]:
        top1 = 100.0 * float(np.mean(np.argmax(logits, -1) == data.labels))
        mse = float(np.mean(np.square(logits - full)))
        kl = float(np.mean(np.sum(np.exp(log_p) * (log_p - _log_softmax(logits)), axis=-1)))
        return top1, mse, max(kl, 0.0)

    shifted = shifted_stages(model.config)
    skips = tuple(
        Skip(stage, blocks, *score(logits_of(skipped_params(params, stage, blocks), data.images)))
        for stage, blocks in skip_units(model.depths, shifted)
    )
    return BlockImportance(tuple(model.depths), shifted, score(full)[0], len(data), source, skips)


# ----------------------------------------------------------------------------- outputs


def importance_table(importance: BlockImportance) -> str:
    rows = [["none (the teacher)", "", f"{importance.top1:.2f}", "", "0", "0"]]
    for s in importance.skips:
        kinds = "/".join(
            "shifted" if importance.shifted[s.stage] and j % 2 else "unshifted" for j in s.blocks
        )
        rows.append(
            [
                s.name,
                kinds,
                f"{s.top1:.2f}",
                f"{s.top1 - importance.top1:+.2f}",
                f"{s.mse:.4g}",
                f"{s.kl:.4g}",
            ]
        )
    return markdown_table(("skipped", "windows", "top-1 %", "Δ top-1", "MSE", "KL"), rows)


def importance_markdown(importance: BlockImportance, command: str = "") -> str:
    lines = [
        "# Block importance",
        "",
        f"Teacher depths {importance.depths}, {importance.images} images ({importance.source}). "
        "Each row skips the named block(s) (identity through the residual) and compares the "
        "logits to the full teacher's: MSE, and KL(teacher || skipped), the cost "
        "`student.keep_blocks=importance` drops the cheapest blocks by.",
        "",
        importance_table(importance),
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def plot_importance(importance: BlockImportance, path: Path) -> Path:
    import matplotlib  # lazily: only when a plot is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"s{s.stage}:{'+'.join(map(str, s.blocks))}" for s in importance.skips]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.35 * len(names)), 5.0))
    top.bar(names, [max(s.kl, 1e-12) for s in importance.skips], color="tab:blue")
    top.set_yscale("log")
    top.set_ylabel("KL to the teacher")
    bottom.bar(names, [s.top1 - importance.top1 for s in importance.skips], color="tab:red")
    bottom.set_ylabel("Δ top-1 (points)")
    for ax in (top, bottom):
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    top.set_title(f"Skipping each block and pair (stage:blocks), {importance.images} images")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_importance(importance: BlockImportance, out: Path, command: str = "") -> Path:
    """OUT/block_importance.{md,json,png}; returns the .md's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{FILE_STEM}.json", importance.to_dict())
    plot_importance(importance, out / f"{FILE_STEM}.png")
    markdown = importance_markdown(importance, command)
    write_text(out / f"{FILE_STEM}.md", markdown + f"\n![block importance]({FILE_STEM}.png)\n")
    return out / f"{FILE_STEM}.md"


def load_importance(path: Path) -> BlockImportance:
    return BlockImportance.from_dict(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------- the pipeline


def after_fine_tuning(
    teacher: SwinTransformer, teacher_params, splits, split_seed: int, batch_size: int, workdir
) -> BlockImportance:
    """The fine-tuned teacher measured for the pipeline (teacher.block_importance, or a
    student keeping blocks by importance), WORKDIR/block_importance.* written: on the
    validation carve-out of `splits`, else on a class-balanced subset of the training
    images (`split_seed`), never on the test split."""
    data, source = measurement_images(splits, split_seed)
    importance = measure(teacher, teacher_params, data, source=source, batch_size=batch_size)
    if is_main_process():
        cli.note(f"block importance: {write_importance(importance, Path(workdir))}")
    return importance


def measurement_images(splits, split_seed: int, where: str = "") -> tuple[ArrayDataset, str]:
    """The images blocks are chosen on, and their description: the validation carve-out,
    else a class-balanced subset of the training images (`split_seed`), never the test split."""
    if splits.validation is not None:
        return splits.validation, f"the validation carve-out{where}"
    train = training_slice(splits.train, split_seed)
    note = f"{len(train)}, class-balanced; no validation carve-out, not the test split"
    return train, f"training images{where} ({note})"


def training_slice(train: ArrayDataset, seed: int) -> ArrayDataset:
    """A class-balanced subset (a streamed split's too: `measure` decodes only it)."""
    return balanced_subset(train, min(MAX_TRAIN_IMAGES, len(train)), seed)


# ----------------------------------------------------------------------------- the command


def _work_directory(teacher: str) -> Path | None:
    """TEACHER as a work directory (holding teacher/final_model), or None (a checkpoint)."""
    path = Path(teacher)
    return path if (path / "teacher" / "final_model").exists() else None


def _teacher_and_images(args) -> tuple[SwinTransformer, dict, ArrayDataset, str]:
    path = Path(args.teacher)
    workdir = _work_directory(args.teacher)
    model, params = checkpoint.load_checkpoint(
        workdir / "teacher" / "final_model" if workdir else path
    )
    if args.data:
        split = args.split or _default_folder_split(Path(args.data))
        data = load_image_folder(args.data, split, image_size=model.img_size)
        if split == "train" and not args.max_images:
            data = training_slice(data, 0)
            return model, params, data, f"{len(data)} images of {args.data}/train"
        if split == "test":
            cli.note("measuring on the test split: blocks chosen by it have seen it")
        return model, params, data, f"{args.data}/{split}"
    if workdir is None or not (workdir / "config.json").exists():
        raise UserInputError(
            f"{path} is not a work directory with config.json: give the images with "
            "--data ROOT (an image folder ROOT/<split>/<class>/*) and --split"
        )
    data = RunSettings.from_config(json.loads((workdir / "config.json").read_text())).data
    splits = load_splits(data, seed=data.split_seed)
    images, source = measurement_images(splits, data.split_seed, f" of {workdir}")
    return model, params, images, source


def _default_folder_split(root: Path) -> str:
    """An image folder's held-out split that is not its test split, else its training one."""
    return next((s for s in ("validation", "val") if (root / s).is_dir()), "train")


def _refuse_to_replace(out: Path) -> None:
    """The pipeline's table (and any earlier one) stays: checked before measuring."""
    taken = [p.name for p in sorted(out.glob(f"{FILE_STEM}.*"))]
    if taken:
        raise UserInputError(
            f"{out} already holds {', '.join(taken)}: give another --out (this command "
            "never replaces a measurement)"
        )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swin_flax.pipeline.block_importance",
        description="Skip every block and shifted/unshifted pair of a fine-tuned teacher in "
        "turn; top-1 and MSE/KL to the full teacher's logits, as a table and a plot.",
    )
    parser.add_argument("teacher", metavar="TEACHER", help="a work directory or a checkpoint")
    parser.add_argument("--data", default="", help="an image folder ROOT/<split>/<class>/*")
    parser.add_argument(
        "--split",
        default="",
        help="the split of --data (default: validation or val if present, else a "
        f"class-balanced subset of {MAX_TRAIN_IMAGES} train images; test only when asked)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: WORKDIR/block_importance_command"
    )
    parser.add_argument("--max-images", type=int, default=0, help=">0: a class-balanced subset")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    workdir = _work_directory(args.teacher)
    out = args.out or (workdir / "block_importance_command" if workdir else None)
    if out is None:
        raise UserInputError(f"{args.teacher} is a checkpoint: say where the table goes (--out)")
    _refuse_to_replace(Path(out))
    model, params, data, source = _teacher_and_images(args)
    if args.max_images:
        data = balanced_subset(data, args.max_images, 0)
    importance = measure(model, params, data, source=source, batch_size=args.batch_size)
    command = "python -m swin_flax.pipeline.block_importance " + " ".join(argv)
    path = write_importance(importance, out, command)
    print(path.read_text(), end="")
    print(f"wrote {path} and its .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, sys.argv[1:]))
