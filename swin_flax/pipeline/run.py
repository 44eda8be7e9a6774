"""Algorithm 1 end to end: the run's plan (plan.py) executed by a plain loop.

    WORKDIR/config.json             the resolved configuration
    WORKDIR/pretrain/               with pretrain.root: the teacher pretrained on a source
                                    task; its timm file is what the fine-tuning starts from
    WORKDIR/teacher/                fine-tune stage (see stages.py for a stage's files)
    WORKDIR/student_<variant>/      one distillation (or baseline) stage per student variant
                                    (_<row> per sweep row, _seed<n> per seed)
    WORKDIR/teacher_logits/         the teacher's recorded logits, read by later students
    WORKDIR/results.json            one row per evaluated model (and summary.md)

For each stage in order: skip it when finished (its model reused), resume it from its
newest checkpoint, or train it; then score it into its results rows. Running the same
command again therefore continues where the last one stopped; a second run on the same
workdir is refused; SIGTERM/SIGINT saves and stops (inside
`preemption.handle_stop_signals()`). `describe` says what a run would do (`--plan`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from swin_flax import cli
from swin_flax._files import write_text
from swin_flax.data import open_splits, placement
from swin_flax.data.sizes import SplitSizes, sizes_of
from swin_flax.errors import RunPreempted
from swin_flax.model.swin import SwinTransformer, count_params, init_params
from swin_flax.pipeline import block_importance, plan, stages, students
from swin_flax.pipeline.report import write_report
from swin_flax.pipeline.results import (
    ResultRow,
    print_summary,
    record_skipped_images,
    sweep_section,
    write_results,
)
from swin_flax.pipeline.summaries import recommendation_section
from swin_flax.settings import DataSettings
from swin_flax.training import preemption
from swin_flax.training.distributed import is_main_process
from swin_flax.training.evaluate import make_top1_fn, measure_throughput, top1_accuracy
from swin_flax.training.loop import train_stage
from swin_flax.training.teacher_logits import TeacherLogitSources
from swin_flax.weights import checkpoint
from swin_flax.weights.keep_blocks import exit_student

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def run_pipeline(config, workdir: str | Path) -> list[dict]:
    """Run every stage the config asks for; returns (and writes) the result rows."""
    workdir = Path(workdir)
    settings = plan.load_settings(config)
    run_plan = plan.build_plan(settings, workdir)  # every problem, before any image decodes
    stages.check_workdir_writable(workdir)
    with stages.exclusive_workdir(workdir, enabled=is_main_process()):
        if is_main_process():
            write_text(workdir / "config.json", config.to_json_best_effort(indent=2))
        with preemption.stop_at_once("reading the data"):  # nothing to save yet
            splits = open_splits(settings.data, seed=settings.data.split_seed)
            source = source_task(settings.data, settings.pretrain.root, settings.seed)
        sizes = (
            sizes_of(splits),
            source and SplitSizes(len(source[0]), len(source[1]), source[0].num_classes),
        )
        if sizes != (run_plan.data, run_plan.source):  # TFDS prepared just now, images skipped
            run_plan = plan.build_plan(settings, workdir, *sizes)
        if is_main_process():
            for length in run_plan.lengths:
                print(f"stage length: {length.describe()}", flush=True)
        placement.check_fits_devices([splits.train, splits.test])
        record_skipped_images(workdir, *(d for d in vars(splits).values() if d is not None))
        run = Execution(run_plan, workdir, splits, source)
        try:
            run.run()
        except stages.StageStopped as stop:
            print(f"stopped early: {stop}", flush=True)
        else:  # every stage finished: the rows are the whole run's (none: no file to write)
            if run.rows:
                write_results(workdir, run.rows, settings.sweep)
        rows = run.rows
        print_summary(rows)
        if rows and is_main_process():
            # summary.md becomes the report, then the recommended student and the sweep's
            # table when there are.
            after = [recommendation_section(rows), sweep_section(rows, settings.sweep)]
            print(f"report: {write_report([workdir], workdir, after=after)}", flush=True)
        return [row.to_dict() for row in rows]


def source_task(data_settings: DataSettings, root: str, seed: int):
    """The pretraining's source task (pretrain.root's train and test splits, whole, with the
    target's image settings and placement), or None without pretraining."""
    if not root:
        return None
    source = dataclasses.replace(
        data_settings,
        source="image_folder",
        root=root,
        train_split="train",
        test_split="test",
        train_subset=0,
        test_subset=0,
        validation_fraction=0.0,
    )
    splits = open_splits(source, seed=seed)
    return [splits.train, splits.test]


def compute_dtype(name: str):
    """'auto': bf16 on GPU/TPU (float32 parameters), float32 on CPU."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return COMPUTE_DTYPES[name]


def stop_if_requested(next_stage: str) -> None:
    """Between stages: a SIGTERM/SIGINT received meanwhile stops here (nothing unsaved)."""
    if preemption.stop_requested():
        raise RunPreempted(
            f"stopped by {preemption.pending_signal()} before {next_stage}; "
            "every finished stage is kept"
        )


class Execution:
    """One plan over one work directory, with its data loaded: each stage in order, found
    finished, resumed or trained, then scored into its results rows (`rows`, in the plan's
    order; a stage two rows share is scored once)."""

    def __init__(self, run_plan: plan.RunPlan, workdir: Path, splits, source=None):
        self.plan, self.workdir, self.splits = run_plan, workdir, splits
        self.source = source  # the pretraining's (train, test), or None
        self.eval, self.loop, self.attention = (
            run_plan.eval_settings,
            run_plan.loop_settings,
            run_plan.attention,
        )
        self.scored: dict[int, ResultRow] = {}  # index in plan.rows -> the scored row
        self.speeds: dict = {}  # architecture -> measured throughput, shared by its rows
        self.teacher = self.importance = self.logits = self.teacher_val = None

    @property
    def rows(self) -> list[ResultRow]:
        return [self.scored[i] for i in sorted(self.scored)]

    def run(self) -> None:
        for spec in self.plan.stages:
            stop_if_requested(
                {"pretrain": "pretraining", "teacher": "the teacher"}.get(spec.kind, spec.name)
            )
            model, params = self.execute(spec)
            if spec.kind == "teacher":
                self.after_teacher(model, params)
            mine = [i for i, row in enumerate(self.plan.rows) if row.stage == spec.name]
            # A multi-exit stage's rows are its full path, then its exit (a student's model).
            models = (
                [(model, params), exit_model(spec, model, params)] if spec.kind == "exits" else []
            )
            for index, (row_model, row_params) in zip(
                mine, models or [(model, params)] * len(mine)
            ):
                self.scored[index] = self.score(self.plan.rows[index], row_model, row_params)
            if mine:  # written at once (a later stage may still fail), marked partial
                write_results(self.workdir, self.rows, self.plan.sweep, partial=True)
            if spec.kind == "student" and spec.blocks is not None and not spec.distills:
                self.warn_if_student_beats_teacher(spec, model, params)

    def execute(self, spec: plan.StageSpec):
        """The stage's model and parameters: given, found finished, or trained now."""
        dtype = compute_dtype(spec.compute_dtype)
        if spec.given:
            return checkpoint.load_checkpoint(spec.given, dtype=dtype, attention=self.attention)
        stage_dir = self.workdir / spec.name
        stages.check_stage_config(stage_dir, spec.record)
        if stages.finished_model_available(stage_dir):
            model, params = stages.load_finished_model(stage_dir, dtype)
            return model.clone(attention=self.attention), params
        model = SwinTransformer(spec.model, dtype=dtype, attention=self.attention)
        train_data = self.source[0] if spec.data == "source" else self.splits.train
        evaluate = None
        if self.eval.every_epochs and spec.data == "target":  # the per-epoch test top-1
            evaluate = make_top1_fn(model, self.splits.test, batch_size=self.eval.batch_size)
        result = train_stage(
            name=spec.title,
            stage_dir=stage_dir,
            model=model,
            init_params=self.initial_params(spec, model),
            train_data=train_data,
            optim_settings=spec.optim,
            loss_settings=spec.loss,
            augment=spec.augment,
            loop_settings=self.loop,
            seed=spec.seed,
            teacher_logits=self.teacher_logits(spec),
            evaluate=evaluate,
            evaluate_every_epochs=self.eval.every_epochs if evaluate else 0.0,
            feature_weights=spec.features,
            exits=(spec.blocks.kept.blocks,) if spec.kind == "exits" else (),
            full_path_smoothing=spec.full_path_smoothing,
        )
        names, size = train_data.class_names, self.plan.stored_size
        if spec.kind == "exits" and result.completed:  # the exit first: the stage's end marks both
            student, student_params = exit_model(spec, model, result.params)
            exit_result = dataclasses.replace(result, params=student_params)
            stages.finish_stage(stage_dir / EXIT_DIR, student, exit_result, names, size)
        stages.finish_stage(stage_dir, model, result, names, size)
        return model, result.params

    def initial_params(self, spec: plan.StageSpec, model: SwinTransformer):
        if spec.kind == "pretrain":
            return init_params(model, spec.seed)
        if spec.kind in ("teacher", "exits"):
            return students.initial_teacher_params(spec.init, model, seed=spec.seed)
        teacher, teacher_params = self.teacher or (None, None)
        return students.student_params(spec, model, teacher, teacher_params, self.importance)

    def after_teacher(self, teacher, teacher_params) -> None:
        """The teacher's block importance when asked for, and its logits' sources."""
        self.teacher = teacher, teacher_params
        if self.plan.block_importance:
            self.importance = block_importance.after_fine_tuning(
                teacher,
                teacher_params,
                self.splits,
                self.plan.split_seed,
                self.eval.batch_size,
                self.workdir,
            )
        self.logits = TeacherLogitSources(
            self.workdir / "teacher_logits",
            teacher=teacher,
            teacher_params=teacher_params,
            train_data=self.splits.train,
            num_classes=self.splits.train.num_classes,
            writer=is_main_process(),
        )
        for schedule, readers in self.plan.logit_readers().items():
            for _ in range(readers):
                self.logits.expect_reader(*schedule)

    def teacher_logits(self, spec: plan.StageSpec):
        if not spec.distills:
            return None
        mode, store_dtype = spec.teacher_logits
        o = spec.optim
        return self.logits.for_stage(
            mode=mode,
            store_dtype=store_dtype,
            seed=spec.seed,
            batch_size=o.batch_size,
            epochs=o.epochs,
            augment=spec.augment,
        )

    def score(self, row: ResultRow, model, params) -> ResultRow:
        """Step 5: top-1 on the test split (and the validation carve-out), parameters and
        throughput (a property of the architecture: measured once per architecture, with
        repeats and their spread, not per variant while other work may load the machine)."""
        batch_size = self.eval.batch_size

        def top1(data) -> float:
            return round(100.0 * top1_accuracy(model, params, data, batch_size=batch_size), 2)

        if row.role == "source-task":
            scored = dataclasses.replace(row, top1=top1(self.source[1]))
            print(
                f"pretrained teacher: {scored.top1:.2f}% top-1 on the source task's test split; "
                f"the teacher starts from {self.workdir / 'pretrain' / stages.TIMM_EXPORT_FILE}",
                flush=True,
            )
            return scored
        train, test, validation = self.splits.train, self.splits.test, self.splits.validation
        skipped = len(set(train.skipped_files) | set(test.skipped_files))
        throughput = None
        if self.eval.throughput_batch_size:
            speed = self.speeds.get(model.config) or measure_throughput(
                model,
                params,
                batch_size=self.eval.throughput_batch_size,
                repeats=self.eval.throughput_repeats,
            )
            self.speeds.setdefault(model.config, speed)
            throughput = {
                "images_per_second": round(speed["images_per_second"], 1),
                "images_per_second_min": round(speed["min"], 1),
                "images_per_second_max": round(speed["max"], 1),
                "throughput_noisy": speed["noisy"],
                "device": speed["device"],
            }
        return dataclasses.replace(
            row,
            top1=top1(test),
            val_top1=top1(validation) if validation is not None else None,
            params=count_params(params),
            skipped_images=skipped or None,
            throughput=throughput,
        )

    def warn_if_student_beats_teacher(self, spec, model, params) -> None:
        """The regime check, as soon as a transfer student is scored, before its distilled
        sibling trains; decided on the validation carve-out, never on the test split."""
        validation = self.splits.validation
        if validation is None or self.teacher is None:
            return
        if self.teacher_val is None:
            teacher, teacher_params = self.teacher
            self.teacher_val = round(
                100.0
                * top1_accuracy(
                    teacher, teacher_params, validation, batch_size=self.eval.batch_size
                ),
                2,
            )
        transfer_val = next(r.val_top1 for r in self.rows if r.stage == spec.name)
        warning = regime_warning(self.teacher_val, transfer_val, stage=spec.name)
        if warning and is_main_process():
            cli.warn(warning)


EXIT_DIR = "exit"  # a multi-exit stage's exit, a standalone student (final_model/, timm file)


def exit_model(spec: plan.StageSpec, model: SwinTransformer, params):
    """The exit of a multi-exit stage as the student it is: its blocks' modules copied."""
    return exit_student(model.config, spec.blocks.kept.blocks, params, attention=model.attention)


def regime_warning(teacher_val: float, transfer_val: float, *, stage: str) -> str | None:
    """One warning line when the transferred student scores at least its teacher on the
    validation set; None when the teacher is ahead (the paper's regime: Table IX, where
    distillation pulls the student up; here it would pull it toward the weaker teacher)."""
    if transfer_val < teacher_val:
        return None
    return (
        f"the transferred student ({stage}) already scores {transfer_val:.2f}% on the "
        f"validation set, its teacher {teacher_val:.2f}%: distillation will pull it toward a "
        "weaker teacher. Keep the transfer student (no distillation measured in this regime "
        "beat it on validation) or train a stronger teacher; if you distil anyway, KL at a "
        "temperature averaged with the labels' loss (distill.distillation=kl, temperature=4, "
        "joint=arithmetic, alpha=0.5) tied it there, where the paper's loss lost (see the "
        "README's regime section)."
    )
