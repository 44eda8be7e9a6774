"""Every option of a run, declared once: the config sections as frozen dataclasses.

Each field has its default (the paper's recipe), its valid range, whether it may change
when a stage resumes, and one line of help; `describe_options` lists them all (`python
train.py --options`). `configs/common.py` builds the ml_collections config from these
defaults, experiment configs override them, and `RunSettings.from_config` turns the config
back into these dataclasses: an unknown key is an error with a "did you mean" hint, a value
out of range an error that says what was expected, all of them together. Batch size and
augmentation are not given in the paper: their defaults are our choices.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from swin_flax import _options
from swin_flax._options import finite, one_of, option, ordered_pair

# How window attention is computed (a run choice like the compute dtype, the same numbers in
# float32) is declared with the model that computes it; the option below offers its names.
from swin_flax.model.attention import ATTENTION_IMPLEMENTATIONS

# Valid ranges (check, what it expects) that several fields share or that are long to write.
_INT_GE_0 = (lambda v: v >= 0, "an int >= 0")
_INT_GE_1 = (lambda v: v >= 1, "an int >= 1")
_RATE = (finite(lambda v: 0 <= v < 1), "a rate in [0, 1)")
_FRACTION = (finite(lambda v: 0 <= v < 1), "a fraction in [0, 1)")
_UNIT = (finite(lambda v: 0 <= v <= 1), "a weight in [0, 1]")
_WEIGHT = (finite(lambda v: v >= 0), "a finite weight >= 0")
_SUBSET = (lambda v: v >= 0, "0 (all) or a number of examples")
_EPOCHS = (finite(lambda v: v > 0), "a finite number of epochs > 0")
_WARMUP = (finite(lambda v: v >= 0), "a number of epochs >= 0")
_EVERY_EPOCHS = (finite(lambda v: v >= 0), "0 (only at the end) or a number of epochs")
_LR = (finite(lambda v: v > 0), "a finite learning rate > 0")
_END_LR = (finite(lambda v: v >= 0), "a finite learning rate >= 0")
_DECAY = (finite(lambda v: v >= 0), "a finite number >= 0")
_CLIP = (finite(lambda v: v >= 0), "0 (no clipping) or a norm > 0")
_TEMPERATURE = (finite(lambda v: v > 0), "a finite temperature > 0")
_LAYER_DECAY = (finite(lambda v: 0 < v <= 1), "a factor in (0, 1]")
_STORED_SIZE = (lambda v: v >= 0, "0 (keep the stored size) or a side in pixels")
_PADDING = (lambda v: v >= 0, "an int >= 0 (pixels of zero padding)")
_THROUGHPUT = (lambda v: v >= 0, "0 (no throughput) or a batch size")
_STOP = (lambda v: v >= 0, "0 or a step count")
_SEEDS = (
    lambda v: _options.distinct_ints(v.split(",")),
    "comma-separated distinct ints >= 0, e.g. '0,1,2'",
)
_FEATURE_WEIGHTS = (
    lambda v: re.fullmatch(r"[0-9.eE, ]*", str(v)) is not None,
    "'' or a weight >= 0 per stage",
)
_SWEEP = (
    lambda v: isinstance(v, str) and (not v.strip() or "=" in v),
    "'' or rows such as 'alpha=0,0.25' or 'w_d=1; w_d=13'",
)


# Where the data comes from (swin_flax/data/load.py, which imports this, loads each).
DATA_SOURCES = ("tfds", "image_folder", "digits")
# Where it is held: decoded on every device, streamed from disk, or auto (data/placement.py).
DATA_PLACEMENTS = ("auto", "device", "stream")
# How the student's blocks after the cut start (swin_flax/weights/transfer.py imports this).
TAIL_INITS = ("random", "teacher")
# Which teacher blocks a student keeps, by name (swin_flax/weights/keep_blocks.py defines
# each; auto: the recommended one, swin_flax/pipeline/students.py).
KEEP_POLICIES = ("first", "first+teacher_tail", "even", "importance", "auto")
# student.budget: 'params:5.2M' (800k, 5200000) or 'latency:2.5ms' (per image, measured).
BUDGET_PATTERN = r"(params):([0-9]*\.?[0-9]+(?:e[0-9]+)?)([kM]?)|(latency):([0-9]*\.?[0-9]+)(ms)?"
_KEEP_BLOCKS = (
    lambda v: isinstance(v, str) and (v in KEEP_POLICIES or set(v) <= set("0123456789,; ")),
    "'' (off), a policy (" + ", ".join(KEEP_POLICIES) + ") or blocks per stage: '0,1;0,1;4,5;0,1'",
)
_BUDGET = (
    lambda v: isinstance(v, str) and (not v or re.fullmatch(BUDGET_PATTERN, v) is not None),
    "'' (none), 'params:N' (e.g. 5.2M, 800k) or 'latency:Xms' (per image)",
)
# The joint losses of swin_flax/training/losses.py (dynamic_alpha: Eq. 3 with the alpha held
# fixed in the gradient), and where L_d is applied.
JOINT_LOSSES = (
    "arithmetic",
    "linear_alpha",
    "harmonic",
    "weighted_harmonic",
    "dynamic_alpha",
    "hard_only",
)
DISTILL_ON = ("all", "teacher_correct", "teacher_confident")
_DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: bf16 on GPU/TPU, float32 on CPU


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The data set and its augmentation (not given in the paper: ours)."""

    source: str = option(
        "tfds", *one_of(*DATA_SOURCES), help="tfds (data.name), image_folder (data.root), digits"
    )
    name: str = option("cifar100", help="the TFDS image-classification data set (paper: cifar100)")
    data_dir: str = option("", resumable=True, help="TFDS data_dir ('' = ~/tensorflow_datasets)")
    download: bool = option(True, resumable=True, help="download and prepare TFDS data if missing")
    root: str = option("", resumable=True, help="image_folder: root/<split>/<class>/*.jpg")
    stored_size: int = option(
        0, *_STORED_SIZE, help="resize the images when loading, pixels (needed for mixed sizes)"
    )
    skip_bad_images: bool = option(False, help="image_folder: skip (and list) unreadable files")
    # Both placements give the same batches (data/feed.py), so a run may switch on resume.
    placement: str = option(
        "auto",
        *one_of(*DATA_PLACEMENTS),
        resumable=True,
        help="device (decoded onto each), stream (read from disk), auto (device if it fits)",
    )
    workers: int = option(0, *_INT_GE_0, resumable=True, help="decoding threads (0: min(8, CPUs))")
    prefetch: int = option(2, *_INT_GE_1, resumable=True, help="stream: batches decoded ahead")
    train_split: str = option("train", help="the split trained on")
    test_split: str = option("test", help="the split evaluated on")
    train_subset: int = option(0, *_SUBSET, help=">0: a seeded, class-balanced subset (CPU budget)")
    test_subset: int = option(0, *_SUBSET, help=">0: a seeded, class-balanced test subset")
    validation_fraction: float = option(
        0.0, *_FRACTION, help=">0: evaluate on this fraction carved out of the training split"
    )
    split_seed: int = option(0, *_INT_GE_0, help="seed of the digits split, carve-out and subsets")
    image_size: int = option(
        224, lambda v: v > 0, "a side in pixels > 0", help="model input side, pixels (paper: 224)"
    )
    crop_padding: int = option(
        4, *_PADDING, help="random crop after this many pixels of zero padding (ours: 4)"
    )
    flip: bool = option(True, help="random horizontal flip (ours)")
    random_resized_crop: str = option(
        "auto",
        *one_of("auto", "on", "off"),
        help="timm's crop, replaces crop_padding; auto: on for folders larger than image_size",
    )
    crop_scale: tuple = option((0.08, 1.0), *ordered_pair(1.0), help="its area fraction (timm)")
    crop_ratio: tuple = option((3 / 4, 4 / 3), *ordered_pair(), help="its width/height (timm)")


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
    """The teacher T of Algorithm 1, fine-tuned on the data first (step 1)."""

    model: str = option("swin_t", help="a preset of swin_flax/model/presets.py (paper: swin_t)")
    init: str = option(
        "timm:swin_tiny_patch4_window7_224.ms_in1k",
        help="random | timm:<timm name or .safetensors path> | a convert_timm_weights.py dir",
    )
    finetuned: str = option("", help="a finished teacher (load_checkpoint dir): skip fine-tuning")
    drop_path_rate: float = option(0.2, *_RATE, help="stochastic depth (timm's Swin-T: 0.2)")
    block_importance: bool = option(
        False, resumable=True, help="after fine-tuning, skip each block: block_importance.md"
    )


@dataclasses.dataclass(frozen=True)
class StudentSettings:
    """The student S: the teacher's first blocks, then its last stage (Algorithm 1, 2-3)."""

    model: str = option("swin_m", help="a preset; its depths give the cut points (paper: m, n)")
    cut_points: tuple = option((), help="(p1, p2): keep the teacher's blocks [0, p1) + [p2, end)")
    tail_init: str = option(
        "random",
        *one_of(*TAIL_INITS),
        help="the blocks after the cut: random (paper) or copied; with keep_blocks: the head",
    )
    keep_blocks: str = option(
        "", *_KEEP_BLOCKS, help="teacher blocks per stage, or a policy (pipeline/students.py)"
    )
    budget: str = option(
        "", *_BUDGET, help="the largest student within params:N or latency:Xms (this device)"
    )
    drop_path_rate: float = option(0.1, *_RATE, help="stochastic depth (ours: 0.1)")


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """One training stage's optimisation: AdamW, warmup + cosine (the paper's, from TinyViT)."""

    epochs: float = option(60.0, *_EPOCHS, help="length in epochs (paper: 60; Table IV: 30)")
    batch_size: int = option(128, *_INT_GE_1, help="global batch over all devices (ours)")
    peak_lr: float = option(2e-4, *_LR, resumable=True, help="lr after the warmup (paper: 2e-4)")
    warmup_epochs: float = option(5.0, *_WARMUP, help="linear warmup, epochs (paper: 5)")
    weight_decay: float = option(
        0.01, *_DECAY, resumable=True, help="AdamW's decoupled weight decay (paper: 0.01)"
    )
    end_lr: float = option(0.0, *_END_LR, resumable=True, help="where the cosine ends (ours: 0)")
    grad_clip_norm: float = option(
        0.0, *_CLIP, resumable=True, help="clip the gradient's global L2 norm (paper: none)"
    )
    # The fine-tuning recipe the field uses for ViTs (timm / BEiT / DeiT); all off by default,
    # which is the paper's recipe.
    layer_decay: float = option(
        1.0, *_LAYER_DECAY, help="layer-wise lr decay: lr x decay^(depth from top) (1: off)"
    )
    mixup_alpha: float = option(0.0, *_WEIGHT, help="Mixup, lambda ~ Beta(a, a) (0: off; 0.8)")
    cutmix_alpha: float = option(0.0, *_WEIGHT, help="CutMix (0: off; 1.0); both: one per batch")
    ema_decay: float = option(
        0.0, *_RATE, help="evaluate and keep an EMA of the weights (0: off; e.g. 0.999)"
    )


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The training loss (static: compiled into the step); hard_only: labels, no teacher."""

    label_smoothing: float = option(0.0, *_FRACTION, help="smoothing of L_s (paper: none)")
    joint: str = option(
        "weighted_harmonic",
        *one_of(*JOINT_LOSSES),
        help="L_d + L_s: Eq. 1, Table VI, Eq. 2, Eq. 4 (paper's best), Eq. 3 alpha, or L_s alone",
    )
    distillation: str = option("mse", *one_of("mse", "kl"), help="L_d: logit MSE (paper) or KL")
    temperature: float = option(
        1.0, *_TEMPERATURE, help="kl: the softmax temperature (the loss is scaled by its square)"
    )
    alpha: float = option(0.25, *_UNIT, help="arithmetic: weight of L_s (Table IV: best 0.25)")
    alpha_start: float = option(0.0, *_UNIT, help="linear_alpha: alpha at step 0 (Table VI)")
    alpha_end: float = option(0.5, *_UNIT, help="linear_alpha: alpha at the end (best: 0 to 0.5)")
    w_d: float = option(13.0, *_WEIGHT, help="Eq. 4: weight of L_d (Table VII: 1-15, best 13)")
    w_s: float = option(1.0, *_WEIGHT, help="Eq. 4: weight of L_s (paper: 1)")
    distill_on: str = option(
        "all",
        *one_of(*DISTILL_ON),
        help="examples L_d averages over: all, or where the teacher's "
        "top-1 is right / its top probability >= confidence (a batch with none: L = L_s)",
    )
    confidence: float = option(0.5, *_UNIT, help="distill_on=teacher_confident: the threshold")

    @property
    def uses_teacher(self) -> bool:
        return self.joint != "hard_only"


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(OptimSettings):
    """Fine-tuning the teacher on the labels alone (Algorithm 1, step 1)."""

    label_smoothing: float = option(0.1, *_FRACTION, help="smoothing of the labels (ours: 0.1)")

    def loss(self) -> LossSettings:
        return LossSettings(joint="hard_only", label_smoothing=self.label_smoothing)


@dataclasses.dataclass(frozen=True)
class PretrainSettings(OptimSettings):
    """Pretraining the teacher on a source task first: an offline stand-in for ImageNet."""

    root: str = option(
        "", resumable=True, help="source image folder root/<split>/<class>/* ('' = none)"
    )
    label_smoothing: float = option(0.1, *_FRACTION, help="smoothing of the labels (ours: 0.1)")

    def loss(self) -> LossSettings:
        return LossSettings(joint="hard_only", label_smoothing=self.label_smoothing)


@dataclasses.dataclass(frozen=True)
class DistillSettings(LossSettings, OptimSettings):
    """Training the students (Algorithm 1, step 4): the loss and its optimisation."""

    # live = the teacher runs every step; record = run it and store its logits in
    # WORKDIR/teacher_logits (stored steps are read); cached = read them (missing steps run
    # live); auto = record when several students of this run read the same logits (same
    # seed and batch schedule), read a matching recording if there is one, else live.
    teacher_logits: str = option(
        "auto",
        *one_of("live", "record", "cached", "auto"),
        resumable=True,
        help="where the teacher's logits come from (swin_flax/training/teacher_logits.py)",
    )
    # Narrower rounds: record trains on the rounded logits, exact to it, not to live.
    teacher_logits_dtype: str = option(
        "auto", *one_of(*_DTYPES), help="of stored logits; auto = the teacher's compute dtype"
    )
    feature_weights: str = option(
        "", *_FEATURE_WEIGHTS, help="stage-feature distillation: '0,0,1,1' ('0 0 1 1' in a sweep)"
    )

    def loss(self) -> LossSettings:
        return LossSettings(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(LossSettings)}
        )


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Step 5: top-1 on the test split and throughput, per finished model."""

    batch_size: int = option(256, *_INT_GE_1, resumable=True, help="test batch size")
    throughput_batch_size: int = option(
        64, *_THROUGHPUT, resumable=True, help="images per pass when timing images/s (Table X)"
    )
    throughput_repeats: int = option(10, *_INT_GE_1, resumable=True, help="timed repeats")
    every_epochs: float = option(
        0.0, *_EVERY_EPOCHS, resumable=True, help=">0: test top-1 every N epochs (learning curves)"
    )


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How a stage runs: logging, checkpoints, early stops."""

    log_every_steps: int = option(50, *_INT_GE_1, resumable=True, help="log every N steps")
    checkpoint_every_steps: int = option(500, *_INT_GE_1, resumable=True, help="save every N steps")
    keep_checkpoints: int = option(3, *_INT_GE_1, resumable=True, help="checkpoints kept")
    progress_bar: bool = option(True, resumable=True, help="a progress bar per stage")
    stop_after_steps: int = option(
        0, *_STOP, resumable=True, help=">0: stop each stage after N steps (tests)"
    )
    max_stage_steps: int = option(
        10**8, *_INT_GE_0, resumable=True, help="refuse longer stages (typo'd epochs); 0: no limit"
    )


SECTIONS = {
    "data": DataSettings,
    "pretrain": PretrainSettings,
    "teacher": TeacherSettings,
    "finetune": FinetuneSettings,
    "student": StudentSettings,
    "distill": DistillSettings,
    "eval": EvalSettings,
    "loop": LoopSettings,
}


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The run's own options (the sections below hold those of each part)."""

    seed: int = option(0, *_INT_GE_0, help="seed of the teacher and the students (see seeds)")
    compute_dtype: str = option(
        "auto", *one_of(*_DTYPES), help="auto: bf16 on GPU/TPU (float32 parameters), CPU float32"
    )
    attention: str = option(
        "einsum",
        *one_of(*ATTENTION_IMPLEMENTATIONS),
        resumable=True,
        help="window attention: einsum, or fused (xla; cudnn: GPU, bf16; pallas): same numbers",
    )
    # Which stages run (a stage's own settings are in its sections): free to change on resume.
    runs: str = option(
        "transfer+kd", resumable=True, help="student variants: random, random+kd, transfer(+kd)"
    )
    seeds: str = option(
        "", *_SEEDS, resumable=True, help="'0,1,2': every variant once per seed; '' = once (seed)"
    )
    sweep: str = option(
        "", *_SWEEP, resumable=True, help="a table's rows, each its own stages (pipeline/sweeps.py)"
    )
    evaluate_teacher: bool = option(True, resumable=True, help="a results row for the teacher")
    data: DataSettings = DataSettings()
    pretrain: PretrainSettings = PretrainSettings()
    teacher: TeacherSettings = TeacherSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    student: StudentSettings = StudentSettings()
    distill: DistillSettings = DistillSettings()
    eval: EvalSettings = EvalSettings()
    loop: LoopSettings = LoopSettings()

    @classmethod
    def from_config(cls, config, *, check_ranges: bool = True) -> RunSettings:
        """The typed settings of an ml_collections config (or a plain dict), every unknown key
        and (unless the caller checks them itself) out-of-range value reported in one error."""
        return _options.build(cls, config, SECTIONS, check_ranges=check_ranges)


def student_seeds(settings: RunSettings) -> list[int]:
    seeds = [int(p) for p in settings.seeds.split(",") if p.strip()]
    return seeds or [settings.seed]


def default_config_dict() -> dict:
    """The defaults as the nested dict configs/common.py turns into a ConfigDict."""
    return dataclasses.asdict(RunSettings())


def option_fields(settings: RunSettings | None = None) -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, field, value) of every option: the run's own, then each section's."""
    return _options.option_fields(settings or RunSettings(), SECTIONS)


def resumable_keys() -> frozenset[str]:
    """Dotted keys a stage may resume with changed (the rest of its fingerprint is locked)."""
    return frozenset(key for key, f, _ in option_fields() if f.metadata["resumable"])


def range_problems(settings: RunSettings) -> list[str]:
    return _options.range_problems(settings, SECTIONS)


def describe_options() -> str:
    """Every option with its default, valid values, resume rule and help, generated from
    the declarations above (so it cannot drift from them): `python train.py --options`."""
    return _options.describe(
        RunSettings(), SECTIONS, "Options, set with --config.KEY=VALUE (swin_flax/settings.py):"
    )
