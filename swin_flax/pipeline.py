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
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from swin_flax import checkpoint_io, preemption, registry, transfer
from swin_flax.config_check import check_config_values
from swin_flax.data import ArrayDataset
from swin_flax.datasets import load_datasets
from swin_flax.errors import RunPreempted, UserInputError
from swin_flax.evaluate import measure_throughput, top1_accuracy
from swin_flax.metrics_log import is_main_process
from swin_flax.model import SwinTransformer, count_params, init_params, model_config
from swin_flax.train_step import AugmentConfig, LossConfig
from swin_flax.trainer import (LoopConfig, OptimConfig, mark_stage_done, stage_is_done,
                               train_stage)
from swin_flax.variants import StudentVariant, parse_variants
from swin_flax.workdir_lock import exclusive_workdir

FINAL_MODEL_DIR = "final_model"
TIMM_EXPORT_FILE = "timm_model.safetensors"


def compute_dtype(name: str):
    """'auto': bf16 on GPU/TPU (float32 parameters), float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    allowed = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
    if name not in allowed:
        raise UserInputError(
            f"compute_dtype must be 'auto' or one of {sorted(allowed)}, got {name!r}")
    return allowed[name]


def run_pipeline(config, workdir: str | Path) -> list[dict]:
    """Run every stage the config asks for; returns (and writes) the result rows.

    One run at a time per workdir: a second one fails at once (WorkdirInUseError). A
    SIGTERM/SIGINT inside `preemption.handle_stop_signals()` saves a checkpoint and raises
    RunPreempted; the same call again resumes.
    """
    workdir = Path(workdir)
    check_workdir_writable(workdir)
    with exclusive_workdir(workdir, enabled=is_main_process()):
        return _run_pipeline_locked(config, workdir)


def check_workdir_writable(workdir: Path) -> None:
    """A read-only or unwritable workdir is found now, not at the first checkpoint."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as err:
        raise UserInputError(f"cannot write to the workdir {workdir} ({err.strerror or err}); "
                             "give a writable directory with --workdir") from None


def _run_pipeline_locked(config, workdir: Path) -> list[dict]:
    if is_main_process():
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    dtype = compute_dtype(config.compute_dtype)
    loop = LoopConfig(**{**config.loop, "stop_after_steps": config.loop.stop_after_steps or None})
    variants = parse_variants(config.runs)
    validate_config(config, variants)
    train_data, eval_data = load_datasets(config.data, seed=config.data.split_seed)
    check_batch_sizes_fit(config, variants, len(train_data))
    check_data_fits_devices(train_data, eval_data)
    record_skipped_images(workdir, train_data, eval_data)
    rows = []
    try:
        run_stages(config, workdir, dtype, loop, variants, train_data, eval_data, rows)
    except StageStopped as stop:
        print(f"stopped early: {stop}", flush=True)
    print_summary(rows)
    return rows


SKIPPED_IMAGES_FILE = "skipped_images.txt"


def record_skipped_images(workdir: Path, *datasets: ArrayDataset) -> None:
    """data.skip_bad_images=True: what the run did not train or evaluate on, kept beside
    the results (the count also goes into every results row)."""
    skipped = sorted({path for ds in datasets for path in ds.skipped_files})
    if skipped and is_main_process():
        (workdir / SKIPPED_IMAGES_FILE).write_text("".join(f"{p}\n" for p in skipped))
        print(f"note: {len(skipped)} unreadable images skipped, listed in "
              f"{workdir / SKIPPED_IMAGES_FILE}", flush=True)


def run_stages(config, workdir, dtype, loop, variants, train_data, eval_data, rows) -> None:
    num_classes = train_data.num_classes

    teacher = teacher_params = None
    if config.evaluate_teacher or any(v.transfer or v.distill for v in variants):
        stop_if_requested("the teacher")
        teacher, teacher_params, teacher_init = prepare_teacher(
            config, workdir, dtype, num_classes, train_data, loop)
    if config.evaluate_teacher:
        rows.append(evaluate_row(config, f"{config.teacher.model} (teacher)", teacher_init, False,
                                 teacher, teacher_params, train_data, eval_data))
        write_results(workdir, rows)

    for variant in variants:
        stop_if_requested(f"student_{variant.name}")
        student, params = train_student(config, workdir, variant, dtype, num_classes,
                                        teacher, teacher_params, train_data, loop)
        rows.append(evaluate_row(config, student_label(config, student), variant.init,
                                 variant.distill, student, params, train_data, eval_data))
        write_results(workdir, rows)


class StageStopped(Exception):
    """A stage ended before its last step (loop.stop_after_steps); rerun to continue."""


def stop_if_requested(next_stage: str) -> None:
    """Between stages: a SIGTERM/SIGINT received meanwhile stops here (nothing unsaved)."""
    if preemption.stop_requested():
        raise RunPreempted(f"stopped by {preemption.pending_signal()} before {next_stage}; "
                           "every finished stage is kept")


def validate_config(config, variants) -> None:
    """Catch mistakes before the data is loaded and hours are spent on the teacher."""
    from swin_flax import losses
    from swin_flax.sharding import check_batch_size, make_mesh

    check_config_values(config)
    check_paths(config)
    registry.preset(config.teacher.model)
    registry.preset(config.student.model)
    if config.student.tail_init not in transfer.TAIL_INITS:
        raise UserInputError(f"student.tail_init must be one of {transfer.TAIL_INITS}, "
                             f"got {config.student.tail_init!r}")
    if config.student.cut_points:
        p1, p2 = (int(x) for x in config.student.cut_points)
        transfer.validate_cut_points(tuple(registry.preset(config.teacher.model)["depths"]), p1, p2)
    elif any(v.transfer for v in variants):
        check_student_fits_teacher(config)
    if config.teacher.finetuned:
        check_finetuned_teacher(config)
    d = config.distill
    losses.make_distillation_loss(d.distillation, temperature=d.temperature)
    losses.make_joint_loss(d.joint, alpha=d.alpha, alpha_start=d.alpha_start,
                           alpha_end=d.alpha_end, w_d=d.w_d, w_s=d.w_s, total_steps=1)
    if d.joint == "hard_only" and any(v.distill for v in variants):
        raise UserInputError("distill.joint='hard_only' trains without the teacher: use a variant "
                             "without '+kd' (e.g. 'transfer') or a distillation joint loss")
    mesh = make_mesh()
    for name in ("finetune", "distill"):
        try:
            check_batch_size(config[name].batch_size, mesh)
        except ValueError as err:
            raise UserInputError(f"{name}.batch_size: {err}") from None


# The fields a transferred student must share with its teacher (only depths may differ).
TRANSFER_SHARED_FIELDS = ("embed_dim", "num_heads", "window_size", "patch_size", "mlp_ratio")


def check_student_fits_teacher(config) -> None:
    """student.model must be a shallower copy of teacher.model (Algorithm 1's transfer)."""
    teacher = registry.create_model(config.teacher.model)
    student = registry.create_model(config.student.model)
    check_shared_fields(config, teacher, student)
    try:
        transfer.cut_points_from_depths(teacher.depths, student.depths)
    except UserInputError as err:
        raise UserInputError(f"student.model {config.student.model} cannot be cut from "
                             f"teacher.model {config.teacher.model}: {err}") from None


def check_shared_fields(config, teacher: SwinTransformer, student: SwinTransformer) -> None:
    for field in TRANSFER_SHARED_FIELDS:
        if getattr(student, field) != getattr(teacher, field):
            raise UserInputError(
                f"cannot transfer blocks from {config.teacher.model} to {config.student.model}: "
                f"their {field} differ ({getattr(teacher, field)} vs {getattr(student, field)}); "
                "a transferred student must be a shallower copy of the teacher")


def architecture_differences(stored: dict, expected: dict) -> list[str]:
    """'field stored vs expected' for every architecture field that differs (the class
    count and the regularisation rates are not architecture)."""
    ignored = ("num_classes", "drop_rate", "attn_drop_rate", "drop_path_rate")
    return [f"{k} {stored.get(k)} vs {expected[k]}" for k in expected
            if k not in ignored and stored.get(k) != expected[k]]


def expected_teacher_config(config) -> dict:
    return model_config(registry.create_model(config.teacher.model,
                                              img_size=config.data.image_size))


def check_finetuned_teacher(config) -> None:
    """teacher.finetuned must hold the architecture teacher.model names: results are
    labelled with that name, so a different one would be reported under a false name."""
    where = config.teacher.finetuned
    differing = architecture_differences(checkpoint_io.load_model_config(where),
                                         expected_teacher_config(config))
    if differing:
        raise UserInputError(
            f"teacher.finetuned {where!r} holds a different architecture than teacher.model "
            f"{config.teacher.model!r} at data.image_size {config.data.image_size} "
            f"({'; '.join(differing)}); set teacher.model to the checkpoint's architecture")


# Each device holds the whole data set (replicated) beside the model, optimizer state and
# activations; beyond this fraction of its memory the run would fail mid-way with an
# out-of-memory error from deep inside XLA.
MAX_DATA_FRACTION_OF_DEVICE = 0.5


def device_memory_bytes() -> tuple[int, str]:
    """(bytes one device can hold, what that is): the accelerator's limit, or on CPU the
    host's physical memory shared by its local devices."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return physical // jax.local_device_count(), "host memory per CPU device"


def check_data_fits_devices(train_data: ArrayDataset, eval_data: ArrayDataset) -> None:
    """Before anything trains: the replicated uint8 data sets must leave room for the model."""
    needed = train_data.images.nbytes + eval_data.images.nbytes
    available, what = device_memory_bytes()
    if needed > MAX_DATA_FRACTION_OF_DEVICE * available:
        side = train_data.images.shape[1]
        raise UserInputError(
            f"the data sets take {needed / 2**30:.2f} GiB ({len(train_data) + len(eval_data)} "
            f"images of {side}x{side}) on every device, more than "
            f"{MAX_DATA_FRACTION_OF_DEVICE:.0%} of the {available / 2**30:.2f} GiB of {what}; "
            "store the images smaller with data.stored_size (e.g. 32 or 64: the resize to "
            "data.image_size happens on the device), or use fewer images")


def check_batch_sizes_fit(config, variants, num_train: int) -> None:
    """Before the teacher trains for hours: the student's batch must fit the data too."""
    stages = [("distill", bool(variants))]
    stages.append(("finetune", not config.teacher.finetuned))
    for name, runs in stages:
        if runs and config[name].batch_size > num_train:
            raise UserInputError(
                f"{name}.batch_size {config[name].batch_size} is larger than the training set "
                f"({num_train} examples); lower it")


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


# Changing these between runs of one stage is allowed: the optimisation knobs (to rescue a
# diverged run) and where the data is stored (moved, or offline on the rerun). Every other
# setting in a stage's fingerprint must match to resume or reuse the stage.
RESUMABLE_CHANGES = ("peak_lr", "grad_clip_norm", "weight_decay", "end_lr",
                     "data_dir", "download", "root")
STAGE_CONFIG_FILE = "stage_config.json"


def teacher_fingerprint(config) -> dict:
    return {"seed": config.seed, "compute_dtype": config.compute_dtype,
            "data": config.data.to_dict(), "teacher": config.teacher.to_dict(),
            "finetune": config.finetune.to_dict()}


def student_fingerprint(config, variant: StudentVariant) -> dict:
    return {**teacher_fingerprint(config), "student": config.student.to_dict(),
            "distill": config.distill.to_dict(), "variant": variant.name}


def check_stage_config(stage_dir: Path, fingerprint: dict) -> None:
    """Refuse to resume or reuse a stage that was started with other settings.

    Only a stage with something to lose (a checkpoint, or finished) is protected: one that
    failed before its first checkpoint simply starts again with the new settings."""
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored
    path = stage_dir / STAGE_CONFIG_FILE
    if path.exists() and stage_has_progress(stage_dir):
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserInputError(
                f"{path} is damaged ({err}); it records the settings this stage was started "
                "with. Restore it, or delete the stage directory to train the stage again.") from None
        changed = sorted(_differences(stored, fingerprint))
        blocking = [c for c in changed if c.rsplit(".", 1)[-1] not in RESUMABLE_CHANGES]
        if blocking:
            raise UserInputError(
                f"{stage_dir} was started with different settings ({', '.join(blocking)}); "
                "resuming would mix two runs. Use another --workdir, or delete that stage "
                "directory to start it again.")
        if changed:
            print(f"note: {stage_dir.name} resumes with changed {', '.join(changed)}", flush=True)
    if is_main_process():
        stage_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")  # other processes may be reading it
        temporary.write_text(json.dumps(fingerprint, indent=2))
        os.replace(temporary, path)


def stage_has_progress(stage_dir: Path) -> bool:
    checkpoints = stage_dir / "checkpoints"
    has_checkpoint = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    return has_checkpoint or stage_is_done(stage_dir)


def _differences(a, b, prefix: str = ""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _differences(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip(".")


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
    check_stage_config(stage_dir, teacher_fingerprint(config))
    if finished_model_available(stage_dir):
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


def finished_model_available(stage_dir: Path) -> bool:
    """Whether a finished stage can be reused as is. A finished stage whose final_model/
    was deleted or damaged is trained "again": the loop restores the final checkpoint,
    runs no step, and finish_stage writes final_model/ anew."""
    if not stage_is_done(stage_dir):
        return False
    if checkpoint_io.is_checkpoint(stage_dir / FINAL_MODEL_DIR):
        return True
    print(f"note: {stage_dir.name} is finished but its {FINAL_MODEL_DIR}/ is missing or "
          "incomplete; rebuilding it from the stage's newest checkpoint", flush=True)
    broken = stage_dir / FINAL_MODEL_DIR
    if broken.exists() and is_main_process():
        shutil.move(str(broken), str(stage_dir / f"{FINAL_MODEL_DIR}.damaged"))
    return False


def initial_teacher_params(init: str, model: SwinTransformer, *, seed: int):
    """'random', a `load_checkpoint` directory, or 'timm:<name or .safetensors path>'."""
    if init == "random":
        return init_params(model, seed)
    if init.startswith("timm:"):
        from swin_flax import convert

        state_dict = convert.load_state_dict(init[len("timm:"):])
        return convert.timm_to_flax(state_dict, model, head="reinit", rng=seed)
    source, params = checkpoint_io.load_checkpoint(Path(init))
    differing = architecture_differences(model_config(source), model_config(model))
    if differing:
        raise UserInputError(
            f"teacher.init {init!r} holds a different architecture than teacher.model "
            f"{model_name(model)}: " + ", ".join(differing))
    if source.num_classes == model.num_classes:
        return params
    # A new task: keep every pretrained weight but the classifier, which starts fresh.
    return {**params, "head": init_params(model, seed)["head"]}


def model_name(model: SwinTransformer) -> str:
    return f"(depths {list(model.depths)}, embed_dim {model.embed_dim})"


def init_label(init: str) -> str:
    return "random" if init == "random" else "pretrained"


def check_num_classes(model: SwinTransformer, num_classes: int, where) -> None:
    if model.num_classes != num_classes:
        raise UserInputError(f"the teacher in {where} has {model.num_classes} classes but the data "
                             f"set has {num_classes}")


# --- students --------------------------------------------------------------------------

def build_student(config, teacher: SwinTransformer, variant: StudentVariant, dtype,
                  num_classes: int) -> tuple[SwinTransformer, tuple[int, int] | None]:
    """The student architecture and, when transferring, Algorithm 1's cut points."""
    scfg = config.student
    if teacher is None:  # a baseline from scratch: only the teacher's architecture matters
        teacher = registry.create_model(config.teacher.model, num_classes=num_classes,
                                        img_size=config.data.image_size, dtype=dtype)
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
    check_shared_fields(config, teacher, student)
    return student, transfer.cut_points_from_depths(tuple(teacher.depths), tuple(student.depths))


def train_student(config, workdir: Path, variant: StudentVariant, dtype, num_classes: int,
                  teacher, teacher_params, train_data, loop: LoopConfig):
    student, cuts = build_student(config, teacher, variant, dtype, num_classes)
    stage_dir = workdir / f"student_{variant.name}"
    check_stage_config(stage_dir, student_fingerprint(config, variant))
    if finished_model_available(stage_dir):
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
    if result.stopped_by:
        raise RunPreempted(f"{stage_dir.name} stopped by {result.stopped_by} after step "
                           f"{result.steps}; its checkpoint is saved")
    if not result.completed:
        raise StageStopped(f"{stage_dir.name} at step {result.steps}; run the same command "
                           "again to continue")
    from swin_flax.convert import save_timm_safetensors

    model = model.clone(dtype=jnp.float32)
    params = jax.device_get(result.params)
    # Every process joins orbax's save (it writes from the primary host only).
    checkpoint_io.save_checkpoint(stage_dir / FINAL_MODEL_DIR, model, params, overwrite=True)
    if is_main_process():
        save_timm_safetensors(params, stage_dir / TIMM_EXPORT_FILE, model=model)
    mark_stage_done(stage_dir, {"steps": result.steps, "final_metrics": result.final_metrics})


def evaluate_row(config, label: str, init: str, distill: bool, model, params,
                 train_data: ArrayDataset, eval_data: ArrayDataset) -> dict:
    ecfg = config.eval
    row = {
        "model": label,
        "init": init,
        "distillation": bool(distill),
        "top1": round(100.0 * top1_accuracy(model, params, eval_data,
                                            batch_size=ecfg.batch_size), 2),
        "params": count_params(params),
    }
    skipped = len(set(train_data.skipped_files) | set(eval_data.skipped_files))
    if skipped:
        row["skipped_images"] = skipped
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

