r"""Every experiment row of the paper (Tables II, IV-IX); the argument selects the row.

    python train.py --config configs/paper_tables.py:table=II,student=swin_n
    python train.py --config configs/paper_tables.py:table=IV,student=swin_m,teacher=swin_s,alpha=0.25
    python train.py --config configs/paper_tables.py:table=V,student=swin_n
    python train.py --config configs/paper_tables.py:table=VI,interval=0-0.5
    python train.py --config configs/paper_tables.py:table=VII,w_d=13
    python train.py --config configs/paper_tables.py:table=VIII,student=swin_m
    python train.py --config configs/paper_tables.py:table=IX,student=swin_m
Add `smoke` to any of them (e.g. `table=IX,smoke`) for a few steps on tiny settings.
Each run writes WORKDIR/results.json. Table III (teacher fine-tuning) is
configs/teacher_finetune.py; Table X (throughput) is benchmarks/throughput.py.
Teachers are fine-tuned inside the run unless --config.teacher.finetuned points at one.
"""

from configs import common
from configs.teacher_finetune import DROP_PATH, TIMM_WEIGHTS
from swin_flax.errors import UserInputError

TABLES = ("II", "IV", "V", "VI", "VII", "VIII", "IX")


def get_config(arg=None):
    args = common.parse_args(
        arg, allowed=("table", "student", "teacher", "alpha", "interval", "w_d", "smoke"))
    table = str(args.get("table", "IX")).upper()
    if table not in TABLES:
        raise UserInputError(f"table must be one of {TABLES}, got {table!r}")
    c = common.get_base_config()
    c.student.model = str(args.get("student", "swin_n" if table in ("VI", "VII") else "swin_m"))
    teacher = str(args.get("teacher", "swin_t"))
    if teacher not in TIMM_WEIGHTS:
        raise UserInputError(f"teacher must be one of {tuple(TIMM_WEIGHTS)}, got {teacher!r}")
    c.teacher.model = teacher
    c.teacher.init = TIMM_WEIGHTS[teacher]
    c.teacher.drop_path_rate = DROP_PATH[teacher]
    c.evaluate_teacher = False
    d = c.distill

    if table == "II":  # baselines from scratch: no teacher at all
        c.runs = "random"
    elif table == "IV":  # arithmetic joint loss, alpha sweep, 30 epochs
        c.runs = "random+kd"
        d.joint, d.alpha, d.epochs = "arithmetic", common.number_arg(args, "alpha", 0.25), 30
    elif table == "V":  # the tuned arithmetic loss, full 60 epochs
        c.runs = "random+kd"
        d.joint, d.alpha = "arithmetic", 0.25
    elif table == "VI":  # alpha scheduled linearly over training
        interval = str(args.get("interval", "0-0.5"))
        bounds = interval.split("-")
        if len(bounds) != 2:
            raise UserInputError(f"interval must look like 0-0.5, got {interval!r}")
        start, end = (common.number_arg({"interval": b}, "interval", 0.0) for b in bounds)
        c.runs = "random+kd"
        d.joint, d.alpha_start, d.alpha_end = "linear_alpha", start, end
    elif table == "VII":  # weighted harmonic mean, w_s = 1
        c.runs = "random+kd"
        d.joint, d.w_d, d.w_s = "weighted_harmonic", common.number_arg(args, "w_d", 13.0), 1.0
    elif table == "VIII":  # transferred blocks, no distillation
        c.runs = "transfer"
    elif table == "IX":  # the four combinations
        c.runs = "random,random+kd,transfer,transfer+kd"
        c.evaluate_teacher = True

    if args.get("smoke"):
        common.apply_smoke(c)
    return c
