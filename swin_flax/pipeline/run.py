"""Algorithm 1 end to end: fine-tune the teacher, transfer its first blocks into the students,
distil, evaluate.

    WORKDIR/config.json             the resolved configuration
    WORKDIR/teacher/                fine-tune stage (see stages.py for a stage's files)
    WORKDIR/student_<variant>/      one distillation (or baseline) stage per student variant
                                    (_<row> per sweep row, _seed<n> per seed: --config.sweep, .seeds)
    WORKDIR/teacher_logits/         the teacher's recorded logits, read by later students
    WORKDIR/results.json            one row per evaluated model (and summary.md)

Running the same command again skips finished stages and resumes the interrupted one from
its newest checkpoint; a second run on the same workdir is refused; SIGTERM/SIGINT saves
and stops (inside `preemption.handle_stop_signals()`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp

from swin_flax.data import load_datasets
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.dataset import ArrayDataset
from swin_flax.errors import RunPreempted, UserInputError
from swin_flax.model import presets
from swin_flax.model.swin import init_params
from swin_flax.pipeline import preflight, stages, sweeps
from swin_flax.pipeline.results import (
    evaluate_row,
    print_summary,
    record_skipped_images,
    write_results,
)
from swin_flax.pipeline.students import (
    build_student,
    check_num_classes,
    init_label,
    initial_teacher_params,
    student_label,
)
from swin_flax.pipeline.variants import StudentVariant, parse_variants
from swin_flax.pipeline.workdir_lock import exclusive_workdir
from swin_flax.settings import LossSettings, RunSettings, student_seeds
from swin_flax.training import optim, preemption, teacher_logits
from swin_flax.training.distributed import is_main_process
from swin_flax.training.evaluate import make_top1_fn
from swin_flax.training.loop import train_stage
from swin_flax.weights import checkpoint, transfer

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def run_pipeline(config, workdir: str | Path) -> list[dict]:
    """Run every stage the config asks for; returns (and writes) the result rows."""
    workdir = Path(workdir)
    settings = preflight.load_settings(config)
    preflight.check_workdir_writable(workdir)
    with exclusive_workdir(workdir, enabled=is_main_process()):
        if is_main_process():
            (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        variants = parse_variants(settings.runs)
        sweep = sweeps.sweep_rows(settings)
        for row in sweep:
            preflight.check_settings(row.settings(settings), variants)
        train_data, eval_data = load_datasets(settings.data, seed=settings.data.split_seed)
        preflight.check_data(settings, variants, train_data, eval_data)
        record_skipped_images(workdir, train_data, eval_data)
        rows = []
        try:
            Algorithm1(settings, workdir, train_data, eval_data).run(variants, rows, sweep)
        except stages.StageStopped as stop:
            print(f"stopped early: {stop}", flush=True)
        print_summary(rows)
        if sweeps.sweep_table(rows) and is_main_process():
            print(sweeps.sweep_table(rows), flush=True)
        if rows and is_main_process():
            from swin_flax.pipeline.report import write_report

            print(f"report: {write_report([workdir], workdir)}", flush=True)
            write_sweep_table(workdir, rows, settings.sweep, into_summary=True)
        return rows


def write_sweep_table(
    workdir: Path, rows: list[dict], sweep: str, *, into_summary: bool = False
) -> None:
    """A sweep's results in the paper's layout (students down, rows across): sweep.md, and
    at the end of the run also appended to summary.md (after the report rewrote it)."""
    table = sweeps.sweep_table(rows)
    if not table or not is_main_process():
        return
    text = f"## Sweep: {sweep}\n\ntop-1 (%)\n\n{table}\n"
    (workdir / "sweep.md").write_text(text)
    if into_summary:
        with open(workdir / "summary.md", "a") as f:
            f.write("\n" + text)


def compute_dtype(name: str):
    """'auto': bf16 on GPU/TPU (float32 parameters), float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return COMPUTE_DTYPES[name]


class Algorithm1:
    """The paper's stages over one work directory, with the data already loaded."""

    def __init__(
        self,
        settings: RunSettings,
        workdir: Path,
        train_data: ArrayDataset,
        eval_data: ArrayDataset,
    ):
        self.s, self.workdir = settings, workdir
        self.train_data, self.eval_data = train_data, eval_data
        self.dtype = compute_dtype(settings.compute_dtype)
        self.num_classes = train_data.num_classes
        self.augment = AugmentConfig(
            out_size=settings.data.image_size,
            crop_padding=settings.data.crop_padding,
            flip=settings.data.flip,
        )
        self.speeds: dict = {}  # architecture -> measured throughput, shared by its rows
        self.logit_readers: Counter = Counter()  # logit-cache key -> distilling students
        self._hashes: dict = {}

    def run(
        self,
        variants: list[StudentVariant],
        rows: list[dict],
        sweep: list[sweeps.SweepRow] | None = None,
    ) -> None:
        sweep = sweep or [sweeps.SweepRow()]
        teacher = teacher_params = None
        if self.s.evaluate_teacher or any(v.transfer or v.distill for v in variants):
            stop_if_requested("the teacher")
            teacher, teacher_params, teacher_init = self.fine_tune_teacher()  # step 1
        if self.s.evaluate_teacher:
            self.evaluate(
                rows,
                f"{self.s.teacher.model} (teacher)",
                teacher_init,
                False,
                teacher,
                teacher_params,
                seed=self.s.seed,
                stage="teacher",
            )
        # A seed's rows and variants together: an early stop leaves whole seeds. Rows of a
        # sweep are iterated like seeds, each in its own (resumable) stage.
        plan = [
            (seed, row, variant)
            for seed in student_seeds(self.s)
            for row in sweep
            for variant in variants
        ]
        self.logit_readers = Counter(
            self.logit_key(row.settings(self.s), seed)
            for seed, row, variant in plan
            if variant.distill
        )
        for seed, row, variant in plan:
            settings = row.settings(self.s)
            stage = (
                f"student_{variant.name}"
                + (f"_{row.name}" if row.name else "")
                + (f"_seed{seed}" if self.s.seeds else "")
            )
            stop_if_requested(stage)
            student, params = self.train_student(
                variant, teacher, teacher_params, seed, stage, settings
            )  # steps 2-4
            label = student_label(settings, student)
            extra = {}
            if row.name:  # distinct labels keep the rows apart in the report's grouping
                extra = {"student": label, "sweep_row": row.column or row.name}
                label += f" [{row.column}]" if row.column else ""
            self.evaluate(
                rows,
                label,
                variant.init,
                variant.distill,
                student,
                params,
                seed=seed,
                stage=stage,
                extra=extra,
            )

    def evaluate(
        self,
        rows: list[dict],
        label,
        init,
        distill,
        model,
        params,
        *,
        seed: int,
        stage: str,
        extra: dict | None = None,
    ) -> None:
        """Step 5: a results row, written out at once (a later stage may still fail).

        Throughput is a property of the architecture: measured once per architecture (with
        repeats and their spread), not per variant while other work may load the machine.
        """
        row = evaluate_row(
            self.s.eval,
            label,
            init,
            distill,
            model,
            params,
            self.train_data,
            self.eval_data,
            speed=self.speeds.get(model.config),
        )
        self.speeds.setdefault(model.config, row.pop("_speed", None))
        rows.append({**row, "seed": seed, "stage": stage, **(extra or {})})
        write_results(self.workdir, rows)
        write_sweep_table(self.workdir, rows, self.s.sweep)

    def top1_fn(self, model):
        """The per-epoch test evaluation of a stage (eval.every_epochs), or None."""
        if not self.s.eval.every_epochs:
            return None
        return make_top1_fn(model, self.eval_data, batch_size=self.s.eval.batch_size)

    # --- step 1: fine-tune the teacher ---------------------------------------------------

    def fine_tune_teacher(self):
        """A fine-tuned teacher: given by the config, found finished in workdir, or trained now."""
        t = self.s.teacher
        if t.finetuned:
            model, params = checkpoint.load_checkpoint(t.finetuned, dtype=self.dtype)
            check_num_classes(model, self.num_classes, t.finetuned)
            return model, params, "given"
        stage_dir = self.workdir / "teacher"
        stages.check_stage_config(stage_dir, stages.teacher_fingerprint(self.s))
        if stages.finished_model_available(stage_dir):
            return (*stages.load_finished_model(stage_dir, self.dtype), init_label(t.init))
        model = presets.create_model(
            t.model,
            num_classes=self.num_classes,
            img_size=self.s.data.image_size,
            dtype=self.dtype,
            drop_path_rate=t.drop_path_rate,
        )
        params = initial_teacher_params(t.init, model, seed=self.s.seed)
        result = train_stage(
            name="fine-tune teacher",
            stage_dir=stage_dir,
            model=model,
            init_params=params,
            train_data=self.train_data,
            optim_config=self.s.finetune,
            loss_config=self.s.finetune.loss(),
            augment=self.augment,
            loop=self.s.loop,
            seed=self.s.seed,
            evaluate=self.top1_fn(model),
            evaluate_every_epochs=self.s.eval.every_epochs,
        )
        stages.finish_stage(stage_dir, model, result)
        return model, result.params, init_label(t.init)

    # --- steps 2-4: build the student, copy the teacher's first blocks, distil -------------

    def train_student(
        self,
        variant: StudentVariant,
        teacher,
        teacher_params,
        seed: int,
        stage: str,
        settings: RunSettings | None = None,
    ):
        s = settings or self.s  # a sweep row's settings
        student, cuts = build_student(s, teacher, variant, self.dtype, self.num_classes)
        stage_dir = self.workdir / stage
        stages.check_stage_config(stage_dir, stages.student_fingerprint(s, variant.name, seed))
        if stages.finished_model_available(stage_dir):
            return stages.load_finished_model(stage_dir, self.dtype)
        params = init_params(student, seed + 1)
        if variant.transfer:
            params = transfer.transfer_params(
                teacher_params,
                params,
                teacher_depths=tuple(teacher.depths),
                p1=cuts[0],
                p2=cuts[1],
                tail_init=s.student.tail_init,
            )
        loss = s.distill.loss()
        if not variant.distill:  # a baseline: the same recipe on the labels alone
            loss = LossSettings(joint="hard_only", label_smoothing=loss.label_smoothing)
        result = train_stage(
            name=f"student {variant.name}",
            stage_dir=stage_dir,
            model=student,
            init_params=params,
            train_data=self.train_data,
            optim_config=s.distill,
            loss_config=loss,
            augment=self.augment,
            loop=self.s.loop,
            seed=seed,
            teacher=teacher if variant.distill else None,
            teacher_params=teacher_params if variant.distill else None,
            evaluate=self.top1_fn(student),
            evaluate_every_epochs=self.s.eval.every_epochs,
            logit_cache=(
                self.logit_cache(s, seed, teacher, teacher_params) if variant.distill else None
            ),
        )
        stages.finish_stage(stage_dir, student, result)
        return student, result.params

    # --- the teacher's logits: recorded once, read by every student of the same schedule --

    def logit_key(self, s: RunSettings, seed: int) -> tuple:
        """Students with the same key see the same augmented batches: same teacher logits."""
        return seed, s.distill.batch_size, s.distill.epochs

    def logit_cache(self, s: RunSettings, seed: int, teacher, teacher_params):
        """The stage's LogitCache (distill.teacher_logits), or None for a live teacher."""
        mode = s.distill.teacher_logits
        if mode == "live":
            return None
        if jax.process_count() > 1:
            if mode != "auto":
                raise UserInputError(
                    f"distill.teacher_logits={mode!r} works in a single "
                    "process; use 'live' (or 'auto') with --multihost"
                )
            return None
        batch = s.distill.batch_size
        steps_per_epoch = len(self.train_data) // batch
        total = optim.steps_from_epochs(s.distill.epochs, steps_per_epoch)
        directory = teacher_logits.cache_dir(
            self.workdir / "teacher_logits", seed=seed, batch_size=batch, total_steps=total
        )
        if mode == "auto":
            if self.logit_readers[self.logit_key(s, seed)] > 1:
                mode = "record"
            elif (directory / teacher_logits.INDEX_FILE).exists():
                mode = "cached"
            else:
                return None
        if "teacher" not in self._hashes:  # hashed once: one teacher per run
            self._hashes["teacher"] = teacher_logits.tree_hash(teacher_params)
            self._hashes["data"] = teacher_logits.data_hash(self.train_data)
        fingerprint = teacher_logits.fingerprint(
            teacher=teacher,
            teacher_params_hash=self._hashes["teacher"],
            data_hash=self._hashes["data"],
            augment=self.augment,
            seed=seed,
            batch_size=batch,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            store_dtype=teacher_logits.store_dtype_name(
                s.distill.teacher_logits_dtype, teacher.dtype
            ),
        )
        return teacher_logits.LogitCache(
            directory,
            fingerprint,
            mode=mode,
            num_classes=self.num_classes,
            writer=is_main_process(),
        )


def stop_if_requested(next_stage: str) -> None:
    """Between stages: a SIGTERM/SIGINT received meanwhile stops here (nothing unsaved)."""
    if preemption.stop_requested():
        raise RunPreempted(
            f"stopped by {preemption.pending_signal()} before {next_stage}; "
            "every finished stage is kept"
        )
