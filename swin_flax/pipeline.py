"""Algorithm 1 end to end: fine-tune the teacher, build and transfer the students, distil, evaluate.

Every stage writes into its own directory of the work directory and marks itself done
when finished, so running the same command again skips finished stages and resumes the
interrupted one from its newest checkpoint:

    WORKDIR/config.json             the resolved configuration
    WORKDIR/teacher/                fine-tune stage (checkpoints/, metrics.jsonl, final_model/,
                                    timm_model.safetensors)
    WORKDIR/student_<variant>/      one distillation (or baseline) stage per student variant
    WORKDIR/results.json            one row per evaluated model
    WORKDIR/summary.md              the same rows as a table
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from swin_flax import checkpoint_io, registry, transfer
from swin_flax.data import ArrayDataset
from swin_flax.datasets import load_datasets
from swin_flax.evaluate import measure_throughput, top1_accuracy
from swin_flax.metrics_log import is_main_process
from swin_flax.model import SwinTransformer, count_params, init_params
from swin_flax.train_step import AugmentConfig, LossConfig
from swin_flax.trainer import LoopConfig, OptimConfig, stage_is_done, train_stage
from swin_flax.variants import StudentVariant, parse_variants

FINAL_MODEL_DIR = "final_model"
TIMM_EXPORT_FILE = "timm_model.safetensors"


def compute_dtype(name: str):
    """'auto': bf16 on GPU/TPU (float32 parameters), float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    try:
        return jnp.dtype(name).type
    except TypeError as err:
        raise ValueError(f"compute_dtype must be 'auto', 'float32' or 'bfloat16', got {name!r}") from err


def run_pipeline(config, workdir: str | Path) -> list[dict]:
    """Run every stage the config asks for; returns (and writes) the result rows."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    dtype = compute_dtype(config.compute_dtype)
    check_paths(config)
    train_data, eval_data = load_datasets(config.data, seed=config.seed)
    num_classes = train_data.num_classes
    loop = LoopConfig(**{**config.loop, "stop_after_steps": config.loop.stop_after_steps or None})
    variants = parse_variants(config.runs)
    rows = []

    teacher = teacher_params = None
    if config.evaluate_teacher or any(v.transfer or v.distill for v in variants):
        teacher, teacher_params, teacher_init = prepare_teacher(
            config, workdir, dtype, num_classes, train_data, loop)
    if config.evaluate_teacher:
        rows.append(evaluate_row(config, f"{config.teacher.model} (teacher)", teacher_init, False,
                                 teacher, teacher_params, eval_data))
        write_results(workdir, rows)

    for variant in variants:
        student, params = train_student(config, workdir, variant, dtype, num_classes,
                                        teacher, teacher_params, train_data, loop)
        rows.append(evaluate_row(config, student_label(config, student), variant.init,
                                 variant.distill, student, params, eval_data))
        write_results(workdir, rows)
    print_summary(rows)
    return rows


def check_paths(config) -> None:
    """Fail before the (slow) data loading when a checkpoint the config names is missing."""
    tcfg = config.teacher
    if tcfg.finetuned and not Path(tcfg.finetuned).exists():
        raise FileNotFoundError(
            f"teacher.finetuned {tcfg.finetuned!r} does not exist; give the final_model "
            "directory of a finished teacher run, or leave it empty to fine-tune one")
    init = tcfg.init
    if init not in ("random",) and not init.startswith("timm:") and not Path(init).exists():
        raise FileNotFoundError(
            f"teacher.init {init!r} is neither 'random', 'timm:<name or .safetensors file>' nor "
            "an existing checkpoint directory (write one with convert_timm_weights.py)")


# --- teacher ---------------------------------------------------------------------------

def prepare_teacher(config, workdir: Path, dtype, num_classes: int, train_data: ArrayDataset,
                    loop: LoopConfig):
    """A fine-tuned teacher: given by the config, found finished in workdir, or trained now."""
    tcfg = config.teacher
    if tcfg.finetuned:
        model, params = checkpoint_io.load_checkpoint(tcfg.finetuned, dtype=dtype)
        check_num_classes(model, num_classes, tcfg.finetuned)
        return model, params, "given"
    stage_dir = workdir / "teacher"
    if stage_is_done(stage_dir):
        model, params = checkpoint_io.load_checkpoint(stage_dir / FINAL_MODEL_DIR, dtype=dtype)
        return model, params, init_label(tcfg.init)
    model = registry.create_model(tcfg.model, num_classes=num_classes,
                                  img_size=config.data.image_size, dtype=dtype,
                                  drop_path_rate=tcfg.drop_path_rate)
    params = initial_teacher_params(tcfg.init, model, seed=config.seed)
    result = train_stage(
        name="fine-tune teacher", stage_dir=stage_dir, model=model, init_params=params,
        train_data=train_data, optim_config=optim_config(config.finetune),
        loss_config=LossConfig(joint="hard_only", label_smoothing=config.finetune.label_smoothing),
        augment=augment_config(config), loop=loop, seed=config.seed)
    finish_stage(stage_dir, model, result)
    return model, result.params, init_label(tcfg.init)


def initial_teacher_params(init: str, model: SwinTransformer, *, seed: int):
    """'random', a `load_checkpoint` directory, or 'timm:<name or .safetensors path>'."""
    if init == "random":
        return init_params(model, seed)
    if init.startswith("timm:"):
        from swin_flax import convert

        state_dict = convert.load_state_dict(init[len("timm:"):])
        return convert.timm_to_flax(state_dict, model, head="reinit", rng=seed)
    source, params = checkpoint_io.load_checkpoint(Path(init))
    if source.num_classes == model.num_classes:
        return params
    # A new task: keep every pretrained weight but the classifier, which starts fresh.
    return {**params, "head": init_params(model, seed)["head"]}


def init_label(init: str) -> str:
    return "random" if init == "random" else "pretrained"


def check_num_classes(model: SwinTransformer, num_classes: int, where) -> None:
    if model.num_classes != num_classes:
        raise ValueError(f"the teacher in {where} has {model.num_classes} classes but the data "
                         f"set has {num_classes}")


# --- students --------------------------------------------------------------------------

def build_student(config, teacher: SwinTransformer, variant: StudentVariant, dtype,
                  num_classes: int) -> tuple[SwinTransformer, tuple[int, int] | None]:
    """The student architecture and, when transferring, Algorithm 1's cut points."""
    scfg = config.student
    if teacher is None:  # a baseline from scratch: the student stands alone
        return registry.create_model(scfg.model, num_classes=num_classes,
                                     img_size=config.data.image_size, dtype=dtype,
                                     drop_path_rate=scfg.drop_path_rate), None
    if scfg.cut_points:
        p1, p2 = (int(x) for x in scfg.cut_points)
        depths = transfer.student_depths_from_cuts(tuple(teacher.depths), p1, p2)
        student = teacher.clone(depths=depths, num_classes=num_classes, dtype=dtype,
                                drop_path_rate=scfg.drop_path_rate)
        return student, (p1, p2)
    student = registry.create_model(scfg.model, num_classes=num_classes,
                                    img_size=teacher.img_size, dtype=dtype,
                                    drop_path_rate=scfg.drop_path_rate)
    if not variant.transfer:
        return student, None
    for field in ("embed_dim", "num_heads", "window_size", "patch_size", "mlp_ratio"):
        if getattr(student, field) != getattr(teacher, field):
            raise ValueError(
                f"cannot transfer blocks from {config.teacher.model} to {scfg.model}: their "
                f"{field} differ ({getattr(teacher, field)} vs {getattr(student, field)}); "
                "a transferred student must be a shallower copy of the teacher")
    return student, transfer.cut_points_from_depths(tuple(teacher.depths), tuple(student.depths))


def train_student(config, workdir: Path, variant: StudentVariant, dtype, num_classes: int,
                  teacher, teacher_params, train_data, loop: LoopConfig):
    student, cuts = build_student(config, teacher, variant, dtype, num_classes)
    stage_dir = workdir / f"student_{variant.name}"
    if stage_is_done(stage_dir):
        return checkpoint_io.load_checkpoint(stage_dir / FINAL_MODEL_DIR, dtype=dtype)
    params = init_params(student, config.seed + 1)
    if variant.transfer:
        params = transfer.transfer_params(
            teacher_params, params, teacher_depths=tuple(teacher.depths), p1=cuts[0],
            p2=cuts[1], tail_init=config.student.tail_init)
    dcfg = config.distill
    loss = LossConfig(
        joint=dcfg.joint if variant.distill else "hard_only", distillation=dcfg.distillation,
        temperature=dcfg.temperature, label_smoothing=dcfg.label_smoothing, alpha=dcfg.alpha,
        alpha_start=dcfg.alpha_start, alpha_end=dcfg.alpha_end, w_d=dcfg.w_d, w_s=dcfg.w_s)
    result = train_stage(
        name=f"student {variant.name}", stage_dir=stage_dir, model=student, init_params=params,
        train_data=train_data, optim_config=optim_config(dcfg), loss_config=loss,
        augment=augment_config(config), loop=loop, seed=config.seed,
        teacher=teacher if variant.distill else None,
        teacher_params=teacher_params if variant.distill else None)
    finish_stage(stage_dir, student, result)
    return student, result.params


def student_label(config, student: SwinTransformer) -> str:
    """The configured student's name, or the depths when explicit cut points changed them."""
    named = registry.preset(config.student.model)
    if tuple(named["depths"]) == tuple(student.depths) and named["embed_dim"] == student.embed_dim:
        return config.student.model
    return f"{config.teacher.model} cut to depths {list(student.depths)}"


# --- shared helpers --------------------------------------------------------------------

def optim_config(stage_cfg) -> OptimConfig:
    return OptimConfig(
        epochs=stage_cfg.epochs, batch_size=stage_cfg.batch_size, peak_lr=stage_cfg.peak_lr,
        warmup_epochs=stage_cfg.warmup_epochs, weight_decay=stage_cfg.weight_decay,
        end_lr=stage_cfg.end_lr, grad_clip_norm=stage_cfg.grad_clip_norm or None)


def augment_config(config) -> AugmentConfig:
    return AugmentConfig(out_size=config.data.image_size, crop_padding=config.data.crop_padding,
                         flip=config.data.flip)


def finish_stage(stage_dir: Path, model: SwinTransformer, result) -> None:
    """Keep the finished model as a `load_checkpoint` directory and as timm .safetensors.

    The second is what users deploy: timm's `SwinTransformer(**kwargs)` (kwargs in the
    file's metadata) loads it with strict=True, for PyTorch or ONNX export.
    """
    if not result.completed:
        raise RuntimeError(f"stage in {stage_dir} stopped at step {result.steps} before the end")
    if is_main_process():
        from swin_flax.convert import save_timm_safetensors

        model = model.clone(dtype=jnp.float32)
        params = jax.device_get(result.params)
        checkpoint_io.save_checkpoint(stage_dir / FINAL_MODEL_DIR, model, params, overwrite=True)
        save_timm_safetensors(params, stage_dir / TIMM_EXPORT_FILE, model=model)


def evaluate_row(config, label: str, init: str, distill: bool, model, params,
                 eval_data: ArrayDataset) -> dict:
    ecfg = config.eval
    row = {
        "model": label,
        "init": init,
        "distillation": bool(distill),
        "top1": round(100.0 * top1_accuracy(model, params, eval_data,
                                            batch_size=ecfg.batch_size), 2),
        "params": count_params(params),
    }
    if ecfg.throughput_batch_size:
        speed = measure_throughput(model, params, batch_size=ecfg.throughput_batch_size,
                                   repeats=ecfg.throughput_repeats)
        row["images_per_second"] = round(speed["images_per_second"], 1)
        row["device"] = speed["device"]
    return row


def write_results(workdir: Path, rows: list[dict]) -> None:
    if not is_main_process():
        return
    (workdir / "results.json").write_text(json.dumps(rows, indent=2))
    (workdir / "summary.md").write_text(format_table(rows) + "\n")


def format_table(rows: list[dict]) -> str:
    columns = ["model", "init", "distillation", "top1", "params", "images_per_second"]
    columns = [c for c in columns if any(c in r for r in rows)]
    header = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([header, rule, *body])


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and value > 100_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def print_summary(rows: list[dict]) -> None:
    if is_main_process():
        print(format_table(rows), flush=True)

