r"""Fine-tune an ImageNet-1K Swin teacher on CIFAR-100 (paper Table III; step 1 of Algorithm 1).

The argument picks the teacher: swin_t (default), swin_s or swin_b (alone or as teacher=...).

    python train.py --config configs/teacher_finetune.py:swin_t --workdir runs/teacher_swin_t
    python train.py --config configs/teacher_finetune.py:swin_b --workdir runs/teacher_swin_b
    python train.py --config configs/teacher_finetune.py:swin_t,smoke --workdir /tmp/smoke

The finished teacher is written to WORKDIR/teacher/final_model; pass it to a distillation
run with --config.teacher.finetuned=WORKDIR/teacher/final_model.
"""

from configs import common

TIMM_WEIGHTS = {
    "swin_t": "timm:swin_tiny_patch4_window7_224.ms_in1k",
    "swin_s": "timm:swin_small_patch4_window7_224.ms_in1k",
    "swin_b": "timm:swin_base_patch4_window7_224.ms_in1k",
}
DROP_PATH = {"swin_t": 0.2, "swin_s": 0.3, "swin_b": 0.5}


def get_config(arg=None):
    args = common.parse_args(
        arg, teacher=common.choice(*TIMM_WEIGHTS, bare=True), smoke=common.flag()
    )
    teacher = args.teacher
    c = common.get_base_config()
    c.teacher.model = teacher
    c.teacher.init = TIMM_WEIGHTS[teacher]
    c.teacher.drop_path_rate = DROP_PATH[teacher]
    c.runs = ""  # teacher only
    if args.smoke:
        common.apply_smoke(c)
    return c
