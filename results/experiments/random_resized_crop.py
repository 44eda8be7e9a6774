"""Issue 29 defect 7: timm's RandomResizedCrop against the padded crop on real photos.

CIFAR-10 JPEGs stored at 64 px (data.stored_size) and trained at 56 px, a seeded
class-balanced slice, one small Swin (8x8 tokens) from scratch on the labels, one seed per
setting; chosen on the validation carve-out, test reported beside.

    python results/experiments/random_resized_crop.py /tmp/c10 OUT [--epochs 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from swin_flax.data import load_splits
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.load import resized_crop
from swin_flax.model import presets
from swin_flax.model.swin import init_params
from swin_flax.settings import DataSettings, LoopSettings, LossSettings, OptimSettings
from swin_flax.training.evaluate import top1_accuracy
from swin_flax.training.loop import train_stage

SETTINGS = {  # name -> (data.random_resized_crop, data.crop_scale)
    "padded crop (4 px), the CIFAR recipe": ("off", (0.08, 1.0)),
    "random resized crop, timm's scale (0.08, 1)": ("on", (0.08, 1.0)),
    "random resized crop, scale (0.35, 1)": ("on", (0.35, 1.0)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=float, default=12.0)
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--only", default="", help="run only the settings whose name has this")
    args = parser.parse_args()
    base = DataSettings(
        source="image_folder",
        root=str(args.root),
        stored_size=64,
        image_size=56,
        train_subset=args.train_subset,
        test_subset=2_000,
        validation_fraction=0.1,
    )
    splits = load_splits(base, seed=0)
    model = presets.create_model(
        "swin_micro_n", img_size=56, patch_size=7, num_classes=splits.train.num_classes
    )
    rows = []
    for name, (mode, scale) in SETTINGS.items():
        if args.only not in name:
            continue
        data = dataclasses.replace(base, random_resized_crop=mode, crop_scale=scale)
        start = time.monotonic()
        result = train_stage(
            name=name,
            stage_dir=args.out / f"{mode}_{scale[0]}",
            model=model,
            init_params=init_params(model, 0),
            train_data=splits.train,
            optim_settings=OptimSettings(
                epochs=args.epochs,
                batch_size=128,
                peak_lr=1e-3,
                warmup_epochs=min(1.0, args.epochs / 2),
            ),
            loss_settings=LossSettings(joint="hard_only", label_smoothing=0.1),
            augment=AugmentConfig(out_size=56, crop_padding=4, resized_crop=resized_crop(data)),
            loop_settings=LoopSettings(
                log_every_steps=100, checkpoint_every_steps=10**6, progress_bar=False
            ),
            seed=0,
        )
        val = 100 * top1_accuracy(model, result.params, splits.validation, batch_size=500)
        test = 100 * top1_accuracy(model, result.params, splits.test, batch_size=500)
        minutes = (time.monotonic() - start) / 60
        rows.append({"setting": name, "val_top1": val, "top1": test, "minutes": minutes})
        print(f"| {name} | {val:.2f} | {test:.2f} | {minutes:.1f} |", flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
