"""Pretraining the teacher on a source task: an offline stand-in for downloaded ImageNet weights.

    WORKDIR/pretrain/                          a stage like the others (stages.py)
    WORKDIR/pretrain/timm_model.safetensors    the pretrained teacher in timm's layout: the
                                               file the teacher's fine-tuning starts from
                                               (teacher.init = timm:<that file>, a new head)

`pretrain.root` names an image folder (root/train/<class>/*, root/test/<class>/*). Its train
split trains `teacher.model` from random weights on hard labels with the pretrain section's
recipe; its test split gives the pretrained teacher's top-1 on the source task. The stage's
fingerprint holds only what the pretrained weights depend on (not the target data), so
every later run in the workdir, on any target, reuses the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from swin_flax.data.load import open_splits
from swin_flax.model import presets
from swin_flax.model.swin import init_params
from swin_flax.pipeline import stages
from swin_flax.settings import RunSettings
from swin_flax.training import optim, preemption
from swin_flax.training.evaluate import top1_accuracy
from swin_flax.training.loop import train_stage

STAGE = "pretrain"
DATA_FIELDS = ("stored_size", "skip_bad_images", "image_size", "crop_padding", "flip")


@dataclasses.dataclass(frozen=True)
class Pretrained:
    timm_file: Path
    source_top1: float  # percent, on the source task's test split
    num_classes: int
    steps: int  # optimizer steps the pretraining took (the strong scratch baseline's budget)


def fingerprint(settings: RunSettings) -> dict:
    return {
        "seed": settings.seed,
        "compute_dtype": settings.compute_dtype,
        "data": {k: getattr(settings.data, k) for k in DATA_FIELDS},
        "teacher": {"model": settings.teacher.model, "drop_path": settings.teacher.drop_path_rate},
        "pretrain": dataclasses.asdict(settings.pretrain),
    }


def pretrain_teacher(
    settings: RunSettings, workdir: Path, *, dtype, augment, eval_batch_size: int
) -> Pretrained:
    """The pretrained teacher's timm file: found finished in the workdir, or trained now."""
    p, data = settings.pretrain, settings.data
    stage_dir = Path(workdir) / STAGE
    stages.check_stage_config(stage_dir, fingerprint(settings))
    # The source task's folder, placed as data.placement says (resident or streamed).
    source = dataclasses.replace(
        data,
        source="image_folder",
        root=p.root,
        train_split="train",
        test_split="test",
        train_subset=0,
        test_subset=0,
        validation_fraction=0.0,
    )
    with preemption.stop_at_once("reading the source task's images"):
        splits = open_splits(source, seed=settings.seed)
    train, test = splits.train, splits.test
    steps = optim.steps_from_epochs(p.epochs, len(train) // p.batch_size)
    if stages.finished_model_available(stage_dir):
        model, params = stages.load_finished_model(stage_dir, dtype)
    else:
        model = presets.create_model(
            settings.teacher.model,
            num_classes=train.num_classes,
            img_size=data.image_size,
            dtype=dtype,
            drop_path_rate=settings.teacher.drop_path_rate,
            attention=settings.attention,
        )
        result = train_stage(
            name="pretrain teacher (source task)",
            stage_dir=stage_dir,
            model=model,
            init_params=init_params(model, settings.seed),
            train_data=train,
            optim_config=p,
            loss_config=p.loss(),
            augment=augment,
            loop=settings.loop,
            seed=settings.seed,
        )
        stages.finish_stage(stage_dir, model, result, train, data)
        params = result.params
    top1 = 100.0 * top1_accuracy(model, params, test, batch_size=eval_batch_size)
    return Pretrained(
        timm_file=stage_dir / stages.TIMM_EXPORT_FILE,
        source_top1=round(top1, 2),
        num_classes=train.num_classes,
        steps=steps,
    )


def with_pretrained_teacher(settings: RunSettings, pretrained: Pretrained) -> RunSettings:
    """The settings whose teacher starts from the pretrained file (a new head for the target)."""
    teacher = dataclasses.replace(settings.teacher, init=f"timm:{pretrained.timm_file}")
    return dataclasses.replace(settings, teacher=teacher)


def source_task_row(settings: RunSettings, pretrained: Pretrained) -> dict:
    """The pretrained teacher's results row (its top-1 on the source task's test split)."""
    print(
        f"pretrained teacher: {pretrained.source_top1:.2f}% top-1 on the source task's test "
        f"split; the teacher starts from {pretrained.timm_file}",
        flush=True,
    )
    return {
        "model": f"{settings.teacher.model} (teacher, source task)",
        "init": "random",
        "distillation": False,
        "top1": pretrained.source_top1,
        "task": "source",
        "seed": settings.seed,
        "stage": STAGE,
    }
