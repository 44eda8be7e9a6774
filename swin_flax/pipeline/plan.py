"""The run as a plan: the config resolved once into typed stages, checked once.

`build_plan(settings, workdir)` gives the `RunPlan`: each stage in the order it runs
(pretraining, the teacher's fine-tuning, each student of each seed and sweep row) as a
`StageSpec` holding all that decides what it trains, and the results rows the run writes;
or one error listing every problem (checks.py). A spec's `record` is its stage_config.json
(the fingerprint a rerun compares, stages.py). Two rows that resolve to equal specs are
one stage, trained once, whose results row appears under each. The loop (run.py) runs a
plan, `train.py --plan` prints one; data sizes are counted without decoding (data/sizes.py).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from swin_flax.data.augment import AugmentConfig
from swin_flax.data.load import resized_crop
from swin_flax.data.sizes import SplitSizes, count_folder, count_splits
from swin_flax.model import presets
from swin_flax.model.config import SwinConfig
from swin_flax.pipeline import checks, students
from swin_flax.pipeline.lengths import StageLength, stage_lengths, strong_scratch
from swin_flax.pipeline.results import ResultRow
from swin_flax.pipeline.stages import TIMM_EXPORT_FILE
from swin_flax.pipeline.sweeps import StudentVariant, SweepRow, parse_variants, sweep_rows
from swin_flax.settings import (
    EvalSettings,
    LoopSettings,
    LossSettings,
    OptimSettings,
    RunSettings,
    StudentSettings,
    student_seeds,
)
from swin_flax.training.losses import parse_feature_weights, uses_features
from swin_flax.training.optim import steps_from_epochs
from swin_flax.weights import transfer
from swin_flax.weights.keep_blocks import KeptBlocks

STAGE_KINDS = ("pretrain", "teacher", "student", "strong_scratch", "exits")
PRETRAIN_DATA_FIELDS = ("stored_size", "skip_bad_images", "image_size", "crop_padding", "flip")


@dataclasses.dataclass(frozen=True)
class Blocks:
    """What a transferred student takes from its teacher: Algorithm 1's cut points, or the
    blocks it keeps (policy 'importance': chosen once the teacher's importance is measured)."""

    tail_init: str = "random"
    cut_points: tuple[int, int] | None = None
    kept: KeptBlocks | None = None
    policy: str = ""


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage, resolved. Equal specs are one stage: `name` (its directory), `sweep_row`,
    `title` (progress lines) and `record` (stage_config.json) say where and how, not what."""

    kind: str  # STAGE_KINDS
    seed: int  # of its batches, augmentation and random initialisation
    model: SwinConfig  # what it trains, with the data's class count
    init: str  # random | transfer | timm:<name or file> | a checkpoint directory | given
    optim: OptimSettings  # epochs as trained
    loss: LossSettings
    augment: AugmentConfig
    steps_per_epoch: int | None  # None: the training set's size is not known yet
    compute_dtype: str
    data: str = "target"  # its images: the target task's, or the pretraining's source
    blocks: Blocks | None = None  # a transferred student's
    teacher_logits: tuple[str, str] | None = None  # a distilling student's (mode, dtype)
    features: tuple[float, ...] = ()  # its stage-feature weights (the teacher runs live)
    given: str = ""  # a finished teacher loaded from this checkpoint, not trained
    full_path_smoothing: float = 0.0  # exits: the full path's label smoothing (the teacher's)
    name: str = dataclasses.field(default="", compare=False)
    sweep_row: str = dataclasses.field(default="", compare=False)  # whose directory it is
    title: str = dataclasses.field(default="", compare=False)
    record: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def distills(self) -> bool:
        return self.teacher_logits is not None

    @property
    def steps(self) -> int | None:
        """Its optimizer steps (None: not known yet; 0: a given teacher, not trained)."""
        if self.given or self.steps_per_epoch is None:
            return 0 if self.given else None
        return steps_from_epochs(self.optim.epochs, self.steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    stages: tuple[StageSpec, ...]  # in the order they run, each once
    rows: tuple[ResultRow, ...]  # the results rows in order, each naming its stage (unscored)
    lengths: tuple[StageLength, ...]  # said before training ('stage length:' lines)
    data: SplitSizes
    source: SplitSizes | None  # the pretraining's images
    block_importance: bool  # measure the fine-tuned teacher's blocks after its fine-tuning
    # How stages are run and scored, not what they train (free to change on resume):
    eval_settings: EvalSettings
    loop_settings: LoopSettings
    attention: str
    split_seed: int  # of the carve-out and subsets (block importance's training subset)
    sweep: str  # the config's text: the sweep table's title
    stored_size: int  # data.stored_size, recorded in final_model/ for deployment

    def stage(self, name: str) -> StageSpec:
        return next(spec for spec in self.stages if spec.name == name)

    def logit_readers(self) -> Counter:
        """How many stages may read each batch schedule's teacher logits (teacher_logits.py)."""
        return Counter(
            (s.seed, s.optim.batch_size, s.optim.epochs, s.augment)
            for s in self.stages
            if s.distills and not s.features
        )


def load_settings(config) -> RunSettings:
    """The config's typed settings; an unknown key is an error at once (values: build_plan)."""
    return RunSettings.from_config(config, check_ranges=False)


def build_plan(
    settings: RunSettings,
    workdir: str | Path,
    data: SplitSizes | None = None,
    source: SplitSizes | None = None,
) -> RunPlan:
    """The run's plan, or one error that lists every problem (checks.py). `data` / `source`:
    the sizes of the loaded training data / pretraining images; counted when None."""
    problems: list[str] = []
    variants = checks.parsed(problems, parse_variants, settings.runs) or []
    parsed = checks.parsed(problems, sweep_rows, settings.sweep) or [SweepRow()]
    rows = [(row, _row_settings(settings, row)) for row in parsed]
    problems += checks.config_problems(settings, rows, variants)
    if not problems and data is None:
        data = checks.counted(problems, count_splits, settings.data)
    if not problems and settings.pretrain.root and source is None:
        source = checks.counted(problems, count_folder, settings.pretrain.root)
    lengths = []
    if not problems:
        problems += checks.data_problems(settings, rows, variants, data, source)
    if not problems:
        lengths = stage_lengths(settings, rows, variants, data, source)
        problems += checks.length_problems(lengths, settings.loop.max_stage_steps)
    checks.raise_problems(problems)
    stages, results = _Builder(settings, Path(workdir), data, source).stages(rows, variants)
    importance = settings.teacher.block_importance or any(
        students.needs_importance(row_settings.student) for _, row_settings in rows
    )
    return RunPlan(
        stages, results, tuple(lengths), data, source, importance, settings.eval,
        settings.loop, settings.attention, settings.data.split_seed, settings.sweep,
        settings.data.stored_size,
    )  # fmt: skip


def _row_settings(settings: RunSettings, row: SweepRow) -> RunSettings:
    """`settings` with a sweep row's values."""
    changed = {k: dataclasses.replace(getattr(settings, k), **v) for k, v in row.sections().items()}
    return dataclasses.replace(settings, **changed)


class _Builder:
    """The stages of one checked run (settings, sizes), in the order they run."""

    def __init__(self, settings: RunSettings, workdir: Path, data: SplitSizes, source):
        self.settings, self.data, self.source = settings, data, source
        image_size = settings.data.image_size
        self.teacher = students.teacher_architecture(settings.teacher, image_size, data.num_classes)
        self.teacher_init = settings.teacher.init
        self.resized_crop = resized_crop(settings.data)  # data.random_resized_crop, resolved
        if settings.pretrain.root:  # the teacher starts from the pretraining's timm file
            self.teacher_init = f"timm:{workdir / 'pretrain' / TIMM_EXPORT_FILE}"

    def stages(self, rows, variants) -> tuple[tuple[StageSpec, ...], tuple[ResultRow, ...]]:
        settings, model = self.settings, self.settings.teacher.model
        stages: list[StageSpec] = []
        results: list[ResultRow] = []
        if settings.pretrain.root:
            stages.append(self.pretrain())
            label = f"{model} (teacher, source task)"
            results.append(
                ResultRow("source-task", label, "random", False, settings.seed, "pretrain")
            )
        if settings.evaluate_teacher or any(v.transfer or v.distill for v in variants):
            stages.append(self.fine_tune())
            init = "random" if self.teacher_init == "random" else "pretrained"
            init = "given" if settings.teacher.finetuned else init
            if settings.evaluate_teacher:
                label = f"{model} (teacher)"
                results.append(ResultRow("teacher", label, init, False, settings.seed, "teacher"))
        # A seed's rows and variants together: an early stop leaves whole seeds.
        for seed in student_seeds(settings):
            for row, row_settings in rows:
                for variant in variants:
                    make = self.exits if variant.exits else self.student
                    spec, rows_of_spec = make(row_settings, row, variant, seed)
                    same = next((other for other in stages if other == spec), spec)
                    stages += [] if same is not spec else [spec]
                    results += [dataclasses.replace(r, stage=same.name) for r in rows_of_spec]
        return tuple(stages), tuple(results)

    def _spec(self, kind, seed, model, init, optim_settings, loss, **fields) -> StageSpec:
        sizes = self.source if fields.get("data") == "source" else self.data
        per_epoch = None if sizes.train is None else sizes.train // optim_settings.batch_size
        optim = OptimSettings(**{f.name: getattr(optim_settings, f.name) for f in _OPTIM_FIELDS})
        data = self.settings.data
        augment = AugmentConfig(
            out_size=data.image_size,
            crop_padding=data.crop_padding,
            flip=data.flip,
            mixup_alpha=optim_settings.mixup_alpha,
            cutmix_alpha=optim_settings.cutmix_alpha,
            resized_crop=self.resized_crop,
        )
        dtype = self.settings.compute_dtype
        return StageSpec(kind, seed, model, init, optim, loss, augment, per_epoch, dtype, **fields)

    def _teacher_record(self, run_settings: RunSettings) -> dict:
        """Everything the fine-tuned teacher depends on (stage_config.json's keys)."""
        teacher = dataclasses.replace(run_settings.teacher, init=self.teacher_init)
        return {
            "seed": run_settings.seed,
            "compute_dtype": run_settings.compute_dtype,
            "data": dataclasses.asdict(run_settings.data),
            "teacher": dataclasses.asdict(teacher),
            "finetune": dataclasses.asdict(run_settings.finetune),
        }

    def pretrain(self) -> StageSpec:
        """Only what the pretrained weights depend on (not the target data): every later
        run in the workdir, on any target, reuses them."""
        settings, p, t = self.settings, self.settings.pretrain, self.settings.teacher
        record = {
            "seed": settings.seed,
            "compute_dtype": settings.compute_dtype,
            "data": {k: getattr(settings.data, k) for k in PRETRAIN_DATA_FIELDS},
            "teacher": {"model": t.model, "drop_path": t.drop_path_rate},
            "pretrain": dataclasses.asdict(p),
        }
        model = self.teacher.replace(num_classes=self.source.num_classes)
        return self._spec(
            "pretrain", settings.seed, model, "random", p, p.loss(), data="source",
            name="pretrain", title="pretrain teacher (source task)", record=record,
        )  # fmt: skip

    def fine_tune(self) -> StageSpec:
        settings, f = self.settings, self.settings.finetune
        return self._spec(
            "teacher", settings.seed, self.teacher, self.teacher_init, f, f.loss(),
            given=settings.teacher.finetuned, name="teacher", title="fine-tune teacher",
            record=self._teacher_record(settings),
        )  # fmt: skip

    def student(self, row_settings: RunSettings, row: SweepRow, variant: StudentVariant, seed: int):
        """A student's stage and its results row (Algorithm 1's steps 2-4)."""
        kind = "strong_scratch" if variant.long else "student"
        if variant.long:
            row_settings = strong_scratch(row_settings, self.data, self.source)
        distill = row_settings.distill
        model, blocks = self._student_model(row_settings, variant.transfer)
        loss = distill.loss()
        if not variant.distill:  # a baseline: the same recipe on the labels alone
            loss = LossSettings(joint="hard_only", label_smoothing=loss.label_smoothing)
        record = {
            **self._teacher_record(row_settings),
            "student": dataclasses.asdict(row_settings.student),
            "distill": dataclasses.asdict(distill),
            "variant": variant.name,
            "student_seed": seed,
        }
        seeded = f"seed{seed}" if row_settings.seeds else ""
        name = "_".join(part for part in ("student", variant.name, row.name, seeded) if part)
        features = parse_feature_weights(distill.feature_weights) if variant.distill else ()
        features = features if uses_features(features) else ()
        mode = "live" if features else distill.teacher_logits  # stage outputs are not recorded
        logits = (mode, distill.teacher_logits_dtype) if variant.distill else None
        spec = self._spec(
            kind, seed, model, variant.init, distill, loss, blocks=blocks, teacher_logits=logits,
            features=features, name=name, sweep_row=row.name, title=f"student {variant.name}",
            record=record,
        )  # fmt: skip
        label = self._student_label(row_settings.student, model)
        label += " (strong scratch)" if variant.long else ""
        result = ResultRow(
            "student", f"{label} [{row.column}]" if row.column else label, variant.init,
            variant.distill, seed, name, baseline="strong scratch" if variant.long else "",
            student=label if row.name else "", sweep_row=row.column or row.name,
        )  # fmt: skip
        return spec, (result,)

    def exits(self, row_settings: RunSettings, row: SweepRow, variant: StudentVariant, seed: int):
        """The multi-exit stage (one Swin of the teacher's shape, its full path and the row's
        student as an exit) and its two results rows: the full path, then the exit."""
        model, blocks = self._student_model(row_settings, transfers=True)
        f, distill = row_settings.finetune, row_settings.distill
        kept = blocks.kept or students.kept_blocks(  # cut points: the blocks around the cut
            "first+teacher_tail", self.teacher, model.depths, "teacher"
        )
        record = {
            **self._teacher_record(row_settings),
            "student": dataclasses.asdict(row_settings.student),
            "distill": dataclasses.asdict(distill),
            "variant": variant.name,
            "student_seed": seed,
        }
        seeded = f"seed{seed}" if row_settings.seeds else ""
        name = "_".join(part for part in ("exits", row.name, seeded) if part)
        spec = self._spec(
            "exits", seed, self.teacher, self.teacher_init, f, distill.loss(),
            blocks=Blocks("teacher", kept=kept), full_path_smoothing=f.label_smoothing,
            name=name, sweep_row=row.name, title="multi-exit", record=record,
        )  # fmt: skip
        label = self._student_label(row_settings.student, model)
        column = row.column or row.name
        shown = f" [{row.column}]" if row.column else ""
        full = f"{self.settings.teacher.model} (multi-exit full path){shown}"
        exit_label = f"{label} (exit of the multi-exit model){shown}"
        return spec, (
            ResultRow("student", full, "multi-exit", False, seed, name, sweep_row=column),
            ResultRow(
                "student", exit_label, "multi-exit", True, seed, name,
                student=label if row.name else "", sweep_row=column,
            ),
        )  # fmt: skip

    def _student_model(self, row_settings: RunSettings, transfers: bool):
        """The student's architecture and, when it transfers, what it takes from the teacher:
        the kept blocks (student.keep_blocks / budget), or Algorithm 1's cut points."""
        student_settings, teacher = row_settings.student, self.teacher
        tail_init = student_settings.tail_init
        own = dict(
            num_classes=self.data.num_classes, drop_path_rate=student_settings.drop_path_rate
        )
        if students.uses_keep_blocks(student_settings):
            e = row_settings.eval
            timing = (e.throughput_batch_size, e.throughput_repeats, row_settings.compute_dtype)
            depths = students.target_depths(student_settings, teacher, timing)
            policy = students.policy(student_settings)
            blocks = None
            if transfers:
                keep = student_settings.keep_blocks if policy == "list" else policy
                kept = None
                if policy != "importance":  # else chosen once the teacher's importance is measured
                    kept = students.kept_blocks(keep, teacher, depths, tail_init)
                    depths = kept.depths
                blocks = Blocks(tail_init, kept=kept, policy=keep)
            return teacher.replace(depths=depths, **own), blocks
        if student_settings.cut_points:
            p1, p2 = (int(x) for x in student_settings.cut_points)
            depths = transfer.student_depths_from_cuts(teacher.depths, p1, p2)
            blocks = Blocks(tail_init, cut_points=(p1, p2)) if transfers else None
            return teacher.replace(depths=depths, **own), blocks
        model = presets.preset_config(student_settings.model)
        model = model.replace(img_size=teacher.img_size, **own)
        if not transfers:
            return model, None
        cuts = transfer.cut_points_from_depths(teacher.depths, model.depths)
        return model, Blocks(tail_init, cut_points=cuts)

    def _student_label(self, student_settings: StudentSettings, model: SwinConfig) -> str:
        """The configured student's name, or the depths when explicit cut points changed
        them; a keep-blocks student's name gives its blocks or its policy."""
        teacher_model = self.settings.teacher.model
        if students.uses_keep_blocks(student_settings):
            return students.label(student_settings, teacher_model, model.depths)
        named = presets.preset_config(student_settings.model)
        if named.depths == model.depths and named.embed_dim == model.embed_dim:
            return student_settings.model
        return f"{teacher_model} cut to depths {list(model.depths)}"


_OPTIM_FIELDS = dataclasses.fields(OptimSettings)
