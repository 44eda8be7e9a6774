r"""Every experiment row of the paper (Tables II, IV-IX); the argument selects the row.

    python train.py --config configs/paper_tables.py:table=II,student=swin_n
    python train.py --config configs/paper_tables.py:table=IV,student=swin_m,teacher=swin_s,alpha=0.25
    python train.py --config configs/paper_tables.py:table=V,student=swin_n
    python train.py --config configs/paper_tables.py:table=VI,interval=0-0.5
    python train.py --config configs/paper_tables.py:table=VII,w_d=13
    python train.py --config configs/paper_tables.py:table=VIII,student=swin_m
    python train.py --config configs/paper_tables.py:table=IX,student=swin_m
Without the row argument (alpha, interval, w_d), Tables IV, VI and VII run whole, in one
workdir: the teacher is fine-tuned once, every row is its own resumable stage
(`student_random_kd_alpha0.25`), the teacher's logits are recorded once and read by every
row (`distill.teacher_logits=auto`), and summary.md holds the table in the paper's layout:

    python train.py --config configs/paper_tables.py:table=IV       # students x alpha
    python train.py --config configs/paper_tables.py:table=VI       # intervals
    python train.py --config configs/paper_tables.py:table=VII      # w_d values
Add `smoke` to any of them (e.g. `table=IX,smoke`) for a few steps on tiny settings.
Each run writes WORKDIR/results.json. Table III (teacher fine-tuning) is
configs/teacher_finetune.py; Table X (throughput) is benchmarks/throughput.py.
Teachers are fine-tuned inside the run unless --config.teacher.finetuned points at one.
"""

from configs import common
from configs.teacher_finetune import DROP_PATH, TIMM_WEIGHTS
from swin_flax.model.presets import model_names

TABLES = ("II", "IV", "V", "VI", "VII", "VIII", "IX")
# The rows a whole-table run sweeps (our choice of grid where the row argument is absent).
ALPHAS = (0.0, 0.25, 0.5, 0.75)
STUDENTS = ("swin_m", "swin_n")
INTERVALS = ("0-0.5", "0-1", "0.25-0.75", "0.5-1")
W_DS = (1.0, 5.0, 13.0, 20.0)


def get_config(arg=None):
    args = common.parse_args(
        arg,
        table=common.choice(*TABLES, default="IX", ignore_case=True),
        student=common.choice(  # default None: the table's student
            *model_names(), default=None, expected="a model preset name", usage="MODEL"
        ),
        teacher=common.choice(*TIMM_WEIGHTS),
        alpha=common.number(0.25),
        interval=common.typed(parse_interval, "two numbers such as 0-0.5", "START-END", (0.0, 0.5)),
        w_d=common.number(13.0),
        smoke=common.flag(),
    )
    table, teacher = args.table, args.teacher
    c = common.get_base_config()
    c.student.model = args.student or ("swin_n" if table in ("VI", "VII") else "swin_m")
    c.teacher.model = teacher
    c.teacher.init = TIMM_WEIGHTS[teacher]
    c.teacher.drop_path_rate = DROP_PATH[teacher]
    c.evaluate_teacher = False
    d = c.distill

    if table == "II":  # baselines from scratch: no teacher at all
        c.runs = "random"
    elif table == "IV":  # arithmetic joint loss, alpha sweep, 30 epochs
        c.runs = "random+kd"
        d.joint, d.alpha, d.epochs = "arithmetic", args.alpha, 30
        if not args.given("alpha"):  # the whole table: students x alpha
            students = [c.student.model] if args.given("student") or args.smoke else list(STUDENTS)
            c.sweep = "; ".join(f"student.model={m},alpha={a:g}" for m in students for a in ALPHAS)
    elif table == "V":  # the tuned arithmetic loss, full 60 epochs
        c.runs = "random+kd"
        d.joint, d.alpha = "arithmetic", 0.25
    elif table == "VI":  # alpha scheduled linearly over training
        start, end = args.interval
        c.runs = "random+kd"
        d.joint, d.alpha_start, d.alpha_end = "linear_alpha", start, end
        if not args.given("interval"):  # the whole table: one row per interval
            c.sweep = "; ".join(
                "alpha_start={:g},alpha_end={:g}".format(*parse_interval(i)) for i in INTERVALS
            )
    elif table == "VII":  # weighted harmonic mean, w_s = 1
        c.runs = "random+kd"
        d.joint, d.w_d, d.w_s = "weighted_harmonic", args.w_d, 1.0
        if not args.given("w_d"):  # the whole table: one row per w_d
            c.sweep = "w_d=" + ",".join(f"{w:g}" for w in W_DS)
    elif table == "VIII":  # transferred blocks, no distillation
        c.runs = "transfer"
    elif table == "IX":  # the four combinations
        c.runs = "random,random+kd,transfer,transfer+kd"
        c.evaluate_teacher = True

    if args.smoke:
        common.apply_smoke(c)
        if table == "IV" and not args.given("alpha"):  # the smoke student, not swin_m/swin_n
            c.sweep = "alpha=" + ",".join(f"{a:g}" for a in ALPHAS)
    return c


def parse_interval(interval: str) -> tuple[float, float]:
    """'0-0.5' -> (0.0, 0.5): Table VI's alpha schedule; ValueError for anything else."""
    start, end = interval.split("-")  # ValueError unless exactly two parts
    return float(start), float(end)
