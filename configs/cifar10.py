r"""The paper's Table IX on real photos: CIFAR-10, a CIFAR-native Swin-T teacher and its
Swin-N student in the four variants (scratch, scratch+KD, transfer, transfer+KD), 3 seeds.

Arguments: `source=folder` (default: an image-folder copy such as the shared
cifar10-images.tar.gz extracted, given with root=DIR or --config.data.root) or `source=tfds`
(the TFDS 'cifar10' data set); `budget=cpu` (default: a 10,000-image training slice, 1,000
of it carved out for validation, and 2,000 test images; the 4-pixel-patch presets; at most
an hour on a 2-core CPU) or `budget=gpu` (all 60,000
images, the 2-pixel-patch presets, the paper's 60 + 60 epochs); `student=n|m`; `smoke`.

    tar xzf ../shared/data/cifar10-images.tar.gz -C /tmp/cifar10
    python train.py --config configs/cifar10.py:root=/tmp/cifar10 --workdir runs/cifar10_cpu
    python train.py --config configs/cifar10.py:budget=gpu,root=/data/cifar10 --workdir runs/cifar10_gpu
    python train.py --config configs/cifar10.py:source=tfds,budget=gpu --workdir runs/cifar10_tfds

Every student is evaluated on the test images after every epoch (learning curves), and the
run ends with WORKDIR/summary.md: mean ± std over the seeds, each variant's gain over
scratch with its spread, and the plots in WORKDIR/plots/.
"""

from configs import common


def get_config(arg=None):
    args = common.parse_args(
        arg,
        source=common.choice("folder", "tfds"),
        budget=common.choice("cpu", "gpu"),
        student=common.choice("n", "m"),
        root=common.text(""),
        smoke=common.flag(),
    )
    budget = args.budget
    patch = "_p4" if budget == "cpu" else ""
    c = common.get_base_config()
    c.data.name = "cifar10"
    c.data.source = "tfds" if args.source == "tfds" else "image_folder"
    c.data.root = args.root
    c.data.image_size = 32  # CIFAR-native models: no 32 -> 224 upscaling
    c.data.crop_padding = 4
    # 10% of the training images carved out for validation: the summary's recommended
    # student and the regime warning are decided there, never on the test split.
    c.data.validation_fraction = 0.1
    c.teacher.model = f"cifar_swin_t{patch}"
    c.teacher.init = "random"  # no ImageNet weights exist for these shapes
    c.teacher.drop_path_rate = 0.1
    c.student.model = f"cifar_swin_{args.student}{patch}"
    c.student.drop_path_rate = 0.1
    c.runs = "random,random+kd,transfer,transfer+kd"
    c.seeds = "0,1,2"
    c.eval.every_epochs = 1.0
    c.eval.batch_size = 500
    c.eval.throughput_batch_size = 64
    for stage in (c.finetune, c.distill):
        stage.batch_size = 128
        stage.peak_lr = 1e-3  # from scratch at this size: higher than the paper's fine-tuning 2e-4
        stage.weight_decay = 0.05
    c.finetune.label_smoothing = 0.1
    if budget == "cpu":
        c.data.train_subset, c.data.test_subset = 10_000, 2_000
        c.finetune.epochs, c.finetune.warmup_epochs = 30, 2
        c.distill.epochs, c.distill.warmup_epochs = 8, 1
    else:
        c.finetune.epochs = c.distill.epochs = 60
    c.loop.log_every_steps = 20
    c.loop.checkpoint_every_steps = 200
    if args.smoke:
        c.data.train_subset, c.data.test_subset = 200, 100
        c.finetune.epochs = c.distill.epochs = 1
        c.finetune.warmup_epochs = c.distill.warmup_epochs = 0.5
        c.finetune.batch_size = c.distill.batch_size = 20
        c.seeds = "0,1"
        c.eval.throughput_batch_size, c.eval.throughput_repeats = 8, 3
        c.loop.progress_bar = False
    return c
