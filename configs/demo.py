r"""The offline demo (what `python train.py` runs with no --config): no network needed.

scikit-learn's digits (1,797 8x8 images shipped inside the package, upscaled to 32x32 RGB)
stand in for CIFAR-100; a Swin-T shaped miniature (`swin_micro`, depths 2,2,4,2, 4-pixel patches) is trained
from scratch as the teacher, compressed to depths 2,2,2,2 (cut points 6, 8: the Swin-N
recipe) and the four framework variants of the paper's Table IX are compared.
About 5 minutes on a 2-core CPU.

    python train.py --workdir runs/demo
    python train.py --config configs/demo.py --workdir runs/demo
"""

from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, smoke=common.flag())
    c = common.get_base_config()
    c.compute_dtype = "float32"
    c.data.source = "digits"
    c.data.stored_size = 32
    c.data.image_size = 32
    c.data.crop_padding = 2
    c.data.flip = False  # digits are not mirror-symmetric
    c.teacher.model = "swin_micro"
    c.teacher.init = "random"
    c.teacher.drop_path_rate = 0.0
    c.student.model = "swin_micro_n"
    c.student.drop_path_rate = 0.0
    c.runs = "random,random+kd,transfer,transfer+kd"
    c.finetune.epochs = 30
    c.finetune.batch_size = 64
    c.finetune.peak_lr = 2e-3
    c.finetune.warmup_epochs = 2
    c.finetune.label_smoothing = 0.0
    c.distill.epochs = 3  # a short budget: the paper's point is that the framework trains faster
    c.distill.batch_size = 64
    c.distill.peak_lr = 2e-3
    c.distill.warmup_epochs = 1
    c.eval.batch_size = 150
    c.eval.throughput_batch_size = 64
    c.eval.throughput_repeats = 5
    c.loop.log_every_steps = 20
    c.loop.checkpoint_every_steps = 200
    if args.smoke:
        c.finetune.epochs = c.distill.epochs = 1
        c.finetune.warmup_epochs = c.distill.warmup_epochs = 0.5
        c.eval.throughput_batch_size = 0
        c.loop.progress_bar = False
    return c
