r"""Algorithm 1 with a pretrained teacher, offline: the teacher is first pretrained on a source
task (a stand-in for the ImageNet weights a user downloads), written as a timm-layout
.safetensors file, and Algorithm 1 then runs on a small target task from that file
(`teacher.init=timm:WORKDIR/pretrain/timm_model.safetensors`, a new head): the paper's four
Table IX variants and a strong scratch baseline (`random+long`: as many optimizer steps as
the teacher had in pretraining and fine-tuning together), 3 seeds.

Arguments: `source=DIR`, `target=DIR` (image folders, each with train/ and test/ class
subfolders); `student=n|m`; `budget=cpu` (default: the 4-pixel-patch CIFAR presets, 32 px;
under 90 minutes on a 2-core CPU with the README's split) or `budget=gpu` (2-pixel patches,
longer schedules); `seeds=N` (seeds 0..N-1, default 3; any list with --config.seeds=0,4,7);
`smoke`.

The README's split of the shared CIFAR-10 (five classes each; the target keeps 600 training
images per class, 10% of them carved out for validation; all 1,000 test images per class):

    mkdir -p /tmp/c10 && tar xzf ../shared/data/cifar10-images.tar.gz -C /tmp/c10
    python -m swin_flax.data.folder_subset /tmp/c10 /tmp/c10_source \
        --classes airplane,automobile,bird,cat,deer
    python -m swin_flax.data.folder_subset /tmp/c10 /tmp/c10_target \
        --classes dog,frog,horse,ship,truck --train-per-class 600
    python train.py --config configs/pretrained.py:source=/tmp/c10_source,target=/tmp/c10_target \
        --workdir runs/pretrained

The pretraining is a stage of its own (WORKDIR/pretrain/): rerunning, or running another
target in the same workdir, reuses it. Validation top-1 (never test) decides the summary's
recommended student and the warning when the transferred student already beats its teacher.
"""

from configs import common


def get_config(arg=None):
    args = common.parse_args(
        arg,
        source=common.text(""),
        target=common.text(""),
        student=common.choice("n", "m"),
        budget=common.choice("cpu", "gpu"),
        seeds=common.typed(_seed_count, "a number of seeds >= 1", "N", default=3),
        smoke=common.flag(),
    )
    patch = "_p4" if args.budget == "cpu" else ""
    c = common.get_base_config()
    c.data.source = "image_folder"
    c.data.root = args.target
    c.data.image_size = 32  # CIFAR-sized images, CIFAR-native models: no upscaling
    c.data.crop_padding = 4
    c.data.validation_fraction = 0.1
    c.pretrain.root = args.source
    c.teacher.model = f"cifar_swin_t{patch}"
    c.teacher.drop_path_rate = 0.1
    c.student.model = f"cifar_swin_{args.student}{patch}"
    c.student.drop_path_rate = 0.1
    c.runs = "random,random+kd,transfer,transfer+kd,random+long"
    c.seeds = ",".join(str(s) for s in range(args.seeds))
    c.eval.batch_size = 500
    c.eval.every_epochs = 3.0
    c.eval.throughput_batch_size = 64
    # From random weights on the source task: a from-scratch learning rate.
    p = c.pretrain
    p.batch_size, p.peak_lr, p.weight_decay, p.warmup_epochs = 128, 1e-3, 0.05, 1
    p.epochs = 15 if args.budget == "cpu" else 60
    # Fine-tuning from the pretrained file: lower, as fine-tuning recipes are.
    f = c.finetune
    f.batch_size, f.peak_lr, f.weight_decay, f.warmup_epochs = 64, 5e-4, 0.05, 2
    f.epochs = 30 if args.budget == "cpu" else 60
    f.label_smoothing = 0.1
    # Students: one recipe for every variant (the paper's protocol); the tail is new.
    d = c.distill
    d.batch_size, d.peak_lr, d.weight_decay, d.warmup_epochs = 64, 1e-3, 0.05, 2
    d.epochs = 30 if args.budget == "cpu" else 60
    c.loop.log_every_steps = 20
    c.loop.checkpoint_every_steps = 200
    if args.smoke:
        c.data.train_subset, c.data.test_subset = 120, 60
        p.epochs = f.epochs = d.epochs = 1
        p.warmup_epochs = f.warmup_epochs = d.warmup_epochs = 0.5
        p.batch_size = f.batch_size = d.batch_size = 20
        c.seeds = "0"
        c.eval.every_epochs = 0.0
        c.eval.throughput_batch_size, c.eval.throughput_repeats = 8, 2
        c.loop.progress_bar = False
    return c


def _seed_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise ValueError(text)
    return count
