"""Algorithm 1 end to end: fine-tune the teacher, transfer its first blocks into the students,
distil, evaluate.

    WORKDIR/config.json             the resolved configuration
    WORKDIR/pretrain/               with pretrain.root: the teacher pretrained on a source task,
                                    and its timm file the fine-tuning starts from (pretrain.py)
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

from pathlib import Path

import jax
import jax.numpy as jnp

from swin_flax import cli
from swin_flax._files import write_text
from swin_flax.data import Splits, open_splits
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.load import resized_crop
from swin_flax.errors import RunPreempted
from swin_flax.model import presets
from swin_flax.model.swin import init_params
from swin_flax.pipeline import blocks, preflight, pretrain, regime, stages, sweeps
from swin_flax.pipeline.results import (
    evaluate_row,
    print_summary,
    record_skipped_images,
    sweep_section,
    write_results,
)
from swin_flax.pipeline.students import (
    build_student,
    check_num_classes,
    init_label,
    initial_teacher_params,
    strong_scratch_settings,
    student_label,
    transferred_params,
)
from swin_flax.pipeline.variants import StudentVariant, parse_variants
from swin_flax.pipeline.workdir_lock import exclusive_workdir
from swin_flax.settings import LossSettings, RunSettings, student_seeds
from swin_flax.training import optim, preemption, teacher_logits
from swin_flax.training.distributed import is_main_process
from swin_flax.training.evaluate import make_top1_fn
from swin_flax.training.loop import train_stage
from swin_flax.weights import checkpoint

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def run_pipeline(config, workdir: str | Path) -> list[dict]:
    """Run every stage the config asks for; returns (and writes) the result rows."""
    workdir = Path(workdir)
    settings = preflight.load_settings(config)
    preflight.check_workdir_writable(workdir)
    with exclusive_workdir(workdir, enabled=is_main_process()):
        if is_main_process():
            write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
        variants = parse_variants(settings.runs)
        sweep = sweeps.sweep_rows(settings)
        for row in sweep:
            preflight.check_settings(row.settings(settings), variants)
        with preemption.stop_at_once("reading the data"):  # nothing to save yet
            splits = open_splits(settings.data, seed=settings.data.split_seed)
        preflight.check_data(settings, variants, splits.train, splits.test)
        record_skipped_images(workdir, *(d for d in vars(splits).values() if d is not None))
        rows = []
        try:
            CompressionRun(settings, workdir, splits).run(variants, rows, sweep)
        except stages.StageStopped as stop:
            print(f"stopped early: {stop}", flush=True)
        else:  # every stage finished: the rows are the whole run's (none: no file to write)
            if rows:
                write_results(workdir, rows, settings.sweep)
        print_summary(rows)
        if rows and is_main_process():
            from swin_flax.pipeline.report import write_report

            # summary.md becomes the report, then the recommended student and the sweep's
            # table when there are.
            summary = write_report(
                [workdir],
                workdir,
                after=[regime.recommendation_section(rows), sweep_section(rows, settings.sweep)],
            )
            print(f"report: {summary}", flush=True)
        return rows


def compute_dtype(name: str):
    """'auto': bf16 on GPU/TPU (float32 parameters), float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return COMPUTE_DTYPES[name]


class CompressionRun:
    """Algorithm 1's stages over one work directory, with the data already loaded: (pretrain
    on a source task,) fine-tune the teacher, then every student variant of every seed and
    sweep row, each scored on the test split (and the validation carve-out) once trained."""

    def __init__(self, settings: RunSettings, workdir: Path, splits: Splits):
        self.s, self.workdir = settings, workdir
        self.train_data, self.eval_data = splits.train, splits.test
        self.validation_data: ArrayDataset | None = splits.validation
        self.dtype = compute_dtype(settings.compute_dtype)
        self.num_classes = splits.train.num_classes
        self.pretrained: pretrain.Pretrained | None = None
        self.teacher_val: float | None = None  # the teacher's validation top-1, once scored
        self.speeds: dict = {}  # architecture -> measured throughput, shared by its rows
        self.logits: teacher_logits.TeacherLogitsPlan | None = None  # set once the teacher is
        self.importance: blocks.BlockImportance | None = None  # measured after fine-tuning

    def run(
        self,
        variants: list[StudentVariant],
        rows: list[dict],
        sweep: list[sweeps.SweepRow] | None = None,
    ) -> None:
        sweep = sweep or [sweeps.SweepRow()]
        teacher = teacher_params = None
        if self.s.pretrain.root:
            stop_if_requested("pretraining")
            self.pretrain_teacher(rows)
        if self.s.evaluate_teacher or any(v.transfer or v.distill for v in variants):
            stop_if_requested("the teacher")
            teacher, teacher_params, teacher_init = self.fine_tune_teacher()  # step 1
            self.importance = blocks.after_fine_tuning(self, sweep, teacher, teacher_params)
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
        self.logits = teacher_logits.TeacherLogitsPlan(
            self.workdir / "teacher_logits",
            teacher=teacher,
            teacher_params=teacher_params,
            train_data=self.train_data,
            num_classes=self.num_classes,
            writer=is_main_process(),
        )
        for seed, row, variant in plan:
            if variant.distill:
                d = row.settings(self.s).distill
                self.logits.expect_reader(seed, d.batch_size, d.epochs, self.augment_for(d))
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
            if variant.long:
                label += " (strong scratch)"
            extra = {}
            if variant.long:
                extra = {"baseline": "strong scratch"}
            if row.name:  # distinct labels keep the rows apart in the report's grouping
                extra = {**extra, "student": label, "sweep_row": row.column or row.name}
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
            if variant == StudentVariant("transfer", distill=False):
                self.warn_if_student_beats_teacher(rows[-1], teacher, teacher_params, stage)

    def warn_if_student_beats_teacher(self, row: dict, teacher, teacher_params, stage) -> None:
        """The regime check (regime.py), as soon as a transfer student is scored."""
        if self.validation_data is None or teacher is None:
            return
        if self.teacher_val is None:
            self.teacher_val = regime.percent_top1(
                teacher, teacher_params, self.validation_data, self.s.eval.batch_size
            )
        warning = regime.regime_warning(self.teacher_val, row["val_top1"], stage=stage)
        if warning and is_main_process():
            cli.warn(warning)

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
            validation_data=self.validation_data,
            speed=self.speeds.get(model.config),
        )
        self.speeds.setdefault(model.config, row.pop("_speed", None))
        rows.append({**row, "seed": seed, "stage": stage, **(extra or {})})
        write_results(self.workdir, rows, self.s.sweep, partial=True)  # more stages to come

    def augment_for(self, stage) -> AugmentConfig:
        """What a stage (its finetune / pretrain / distill settings) does to its batches."""
        return AugmentConfig(
            out_size=self.s.data.image_size,
            crop_padding=self.s.data.crop_padding,
            flip=self.s.data.flip,
            mixup_alpha=stage.mixup_alpha,
            cutmix_alpha=stage.cutmix_alpha,
            resized_crop=resized_crop(self.s.data),  # data.random_resized_crop, resolved
        )

    def top1_fn(self, model):
        """The per-epoch test evaluation of a stage (eval.every_epochs), or None."""
        if not self.s.eval.every_epochs:
            return None
        return make_top1_fn(model, self.eval_data, batch_size=self.s.eval.batch_size)

    # --- step 0 (optional): pretrain the teacher on a source task -------------------------

    def pretrain_teacher(self, rows: list[dict]) -> None:
        """Pretrain (or find pretrained) and let the teacher's fine-tuning start from it."""
        self.pretrained = pretrain.pretrain_teacher(
            self.s,
            self.workdir,
            dtype=self.dtype,
            augment=self.augment_for(self.s.pretrain),
            eval_batch_size=self.s.eval.batch_size,
        )
        self.s = pretrain.with_pretrained_teacher(self.s, self.pretrained)
        rows.append(pretrain.source_task_row(self.s, self.pretrained))

    # --- step 1: fine-tune the teacher ---------------------------------------------------

    def fine_tune_teacher(self):
        """A fine-tuned teacher: given by the config, found finished in workdir, or trained now."""
        t = self.s.teacher
        if t.finetuned:
            model, params = checkpoint.load_checkpoint(
                t.finetuned, dtype=self.dtype, attention=self.s.attention
            )
            check_num_classes(model, self.num_classes, t.finetuned)
            return model, params, "given"
        stage_dir = self.workdir / "teacher"
        stages.check_stage_config(stage_dir, stages.teacher_fingerprint(self.s))
        if stages.finished_model_available(stage_dir):
            model, params = stages.load_finished_model(stage_dir, self.dtype)
            return model.clone(attention=self.s.attention), params, init_label(t.init)
        model = presets.create_model(
            t.model,
            num_classes=self.num_classes,
            img_size=self.s.data.image_size,
            dtype=self.dtype,
            drop_path_rate=t.drop_path_rate,
            attention=self.s.attention,
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
            augment=self.augment_for(self.s.finetune),
            loop=self.s.loop,
            seed=self.s.seed,
            evaluate=self.top1_fn(model),
            evaluate_every_epochs=self.s.eval.every_epochs,
        )
        stages.finish_stage(stage_dir, model, result, self.train_data, self.s.data)
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
        if variant.long:
            s = strong_scratch_settings(s, len(self.train_data), self.teacher_steps())
        student, taken = build_student(
            s, teacher, variant, self.dtype, self.num_classes, importance=self.importance
        )
        stage_dir = self.workdir / stage
        stages.check_stage_config(stage_dir, stages.student_fingerprint(s, variant.name, seed))
        if stages.finished_model_available(stage_dir):
            model, params = stages.load_finished_model(stage_dir, self.dtype)
            return model.clone(attention=s.attention), params
        params = init_params(student, seed + 1)
        if variant.transfer:
            params = transferred_params(teacher, teacher_params, params, taken, s.student.tail_init)
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
            augment=self.augment_for(s.distill),
            loop=self.s.loop,
            seed=seed,
            teacher_logits=(
                self.logits.for_stage(
                    mode=s.distill.teacher_logits,
                    store_dtype=s.distill.teacher_logits_dtype,
                    seed=seed,
                    batch_size=s.distill.batch_size,
                    epochs=s.distill.epochs,
                    augment=self.augment_for(s.distill),
                )
                if variant.distill
                else None
            ),
            evaluate=self.top1_fn(student),
            evaluate_every_epochs=self.s.eval.every_epochs,
        )
        stages.finish_stage(stage_dir, student, result, self.train_data, self.s.data)
        return student, result.params

    def teacher_steps(self) -> int:
        """The optimizer steps behind the teacher: its pretraining and its fine-tuning."""
        finetune = self.s.finetune
        steps = optim.steps_from_epochs(
            finetune.epochs, len(self.train_data) // finetune.batch_size
        )
        return steps + (self.pretrained.steps if self.pretrained is not None else 0)


def stop_if_requested(next_stage: str) -> None:
    """Between stages: a SIGTERM/SIGINT received meanwhile stops here (nothing unsaved)."""
    if preemption.stop_requested():
        raise RunPreempted(
            f"stopped by {preemption.pending_signal()} before {next_stage}; "
            "every finished stage is kept"
        )
