"""Every option of a run, declared once: the config sections as frozen dataclasses.

Each field has its default (the paper's recipe), its valid range and whether it may change
when a stage resumes. `configs/common.py` builds the ml_collections config from these
defaults, experiment configs override them, and the pipeline turns the config back into
these dataclasses with `RunSettings.from_config` (`Cls(**section)`): an unknown key is an
error with a "did you mean" hint, a value out of range an error that says what was
expected, all of them together. Adding a loss option is one field in `LossSettings`
plus its use in `swin_flax.training.losses`.

Batch size and augmentation are not given in the paper: the defaults below are our
choices (batch 128, random crop with 4-pixel padding at 32x32, horizontal flip).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

from swin_flax.errors import UserInputError


def option(
    default,
    check: Callable[[Any], bool] | None = None,
    expected: str = "",
    *,
    resumable: bool = False,
):
    """A field with its valid range (`check`, described by `expected`) and whether a stage
    may resume with another value (the optimisation knobs that rescue a diverged run,
    and where the data is stored)."""
    return dataclasses.field(
        default=default, metadata={"check": check, "expected": expected, "resumable": resumable}
    )


def finite(test: Callable[[float], bool]) -> Callable[[Any], bool]:
    """`test`, also rejecting NaN and infinity (NaN compares False, inf passes `> 0`)."""
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and test(v)


def one_of(*choices) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    source: str = option("tfds", *one_of("tfds", "image_folder", "digits"))
    name: str = "cifar100"  # any TFDS image-classification data set
    data_dir: str = option("", resumable=True)  # TFDS data_dir ('' = ~/tensorflow_datasets)
    download: bool = option(True, resumable=True)  # download and prepare when missing
    root: str = option("", resumable=True)  # image_folder: root/<split>/<class>/*.jpg
    stored_size: int = option(
        0, lambda v: v >= 0, "0 (keep the stored size) or a side in pixels"
    )  # resize stored images (needed for mixed sizes)
    skip_bad_images: bool = False  # image_folder: skip unreadable files (listed) instead of failing
    train_split: str = "train"
    test_split: str = "test"
    # >0: a seeded, class-balanced subset of this many examples (a CPU-budget run)
    train_subset: int = option(0, lambda v: v >= 0, "0 (all) or a number of examples")
    test_subset: int = option(0, lambda v: v >= 0, "0 (all) or a number of examples")
    validation_fraction: float = option(0.0, lambda v: 0 <= v < 1, "a fraction in [0, 1)")
    split_seed: int = option(0, lambda v: v >= 0, "an int >= 0")  # digits / carve-out split
    image_size: int = option(224, lambda v: v > 0, "a side in pixels > 0")  # model input
    crop_padding: int = option(4, lambda v: v >= 0, "an int >= 0 (pixels of zero padding)")
    flip: bool = True  # random horizontal flip


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
    model: str = "swin_t"
    # random | timm:<timm name or .safetensors path> | a convert_timm_weights.py directory
    init: str = "timm:swin_tiny_patch4_window7_224.ms_in1k"
    finetuned: str = ""  # a finished teacher (load_checkpoint dir): skip fine-tuning
    drop_path_rate: float = option(0.2, finite(lambda v: 0 <= v < 1), "a rate in [0, 1)")


@dataclasses.dataclass(frozen=True)
class StudentSettings:
    model: str = "swin_m"  # its depths give the cut points (Algorithm 1) ...
    cut_points: tuple = ()  # ... unless given as (p1, p2): keep blocks [0,p1) + [p2,end)
    tail_init: str = option("random", *one_of("random", "teacher"))  # G-hat: random (paper)
    drop_path_rate: float = option(0.1, finite(lambda v: 0 <= v < 1), "a rate in [0, 1)")


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """One training stage's optimisation: AdamW, warmup + cosine (the paper's, from TinyViT)."""

    epochs: float = option(60.0, finite(lambda v: v > 0), "a finite number of epochs > 0")
    batch_size: int = option(128, lambda v: v >= 1, "an int >= 1")
    peak_lr: float = option(
        2e-4, finite(lambda v: v > 0), "a finite learning rate > 0", resumable=True
    )
    warmup_epochs: float = option(5.0, finite(lambda v: v >= 0), "a number of epochs >= 0")
    weight_decay: float = option(
        0.01, finite(lambda v: v >= 0), "a finite number >= 0", resumable=True
    )
    end_lr: float = option(
        0.0, finite(lambda v: v >= 0), "a finite learning rate >= 0", resumable=True
    )
    grad_clip_norm: float = option(
        0.0, finite(lambda v: v >= 0), "0 (no clipping) or a norm > 0", resumable=True
    )


_UNIT = (finite(lambda v: 0 <= v <= 1), "a weight in [0, 1]")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The training loss (static: part of the compiled step). joint='hard_only' trains on
    the labels alone, without a teacher (fine-tuning, baselines)."""

    label_smoothing: float = option(0.0, finite(lambda v: 0 <= v < 1), "a fraction in [0, 1)")
    joint: str = option(
        "weighted_harmonic",
        *one_of("arithmetic", "linear_alpha", "harmonic", "weighted_harmonic", "hard_only"),
    )
    distillation: str = option("mse", *one_of("mse", "kl"))  # mse is the paper's
    temperature: float = option(1.0, finite(lambda v: v > 0), "a finite temperature > 0")  # kl
    alpha: float = option(0.25, *_UNIT)  # arithmetic: weight of the hard-label loss (Table IV)
    alpha_start: float = option(0.0, *_UNIT)  # linear_alpha: alpha from start to end (Table VI)
    alpha_end: float = option(0.5, *_UNIT)
    w_d: float = option(13.0, finite(lambda v: v >= 0), "a finite weight >= 0")  # Eq. 4, Table VII
    w_s: float = option(1.0, finite(lambda v: v >= 0), "a finite weight >= 0")

    @property
    def uses_teacher(self) -> bool:
        return self.joint != "hard_only"


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(OptimSettings):
    label_smoothing: float = option(0.1, finite(lambda v: 0 <= v < 1), "a fraction in [0, 1)")

    def loss(self) -> LossSettings:
        return LossSettings(joint="hard_only", label_smoothing=self.label_smoothing)


@dataclasses.dataclass(frozen=True)
class DistillSettings(LossSettings, OptimSettings):
    # Where the teacher's logits come from (swin_flax/training/teacher_logits.py): live = the teacher
    # runs every step; record = run it and store its logits in WORKDIR/teacher_logits
    # (steps already stored are read); cached = read the stored ones (missing steps run
    # live); auto = record when several students of this run read the same logits (same
    # seed and batch schedule), read a matching recording if there is one, else live.
    teacher_logits: str = option(
        "auto", *one_of("live", "record", "cached", "auto"), resumable=True
    )
    # auto = the teacher's compute dtype (exact); narrower rounds (record trains on the
    # rounded logits too, so the cache is exact to the recording run, not to live)
    teacher_logits_dtype: str = option("auto", *one_of("auto", "float32", "bfloat16", "float16"))

    def loss(self) -> LossSettings:
        return LossSettings(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(LossSettings)}
        )


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    batch_size: int = option(256, lambda v: v >= 1, "an int >= 1")
    throughput_batch_size: int = option(64, lambda v: v >= 0, "0 (no throughput) or a batch size")
    throughput_repeats: int = option(10, lambda v: v >= 1, "an int >= 1")
    # >0: test top-1 every this many epochs (metrics.jsonl 'eval_top1', TensorBoard, plots)
    every_epochs: float = option(
        0.0, finite(lambda v: v >= 0), "0 (only at the end) or a number of epochs"
    )


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    log_every_steps: int = option(50, lambda v: v >= 1, "an int >= 1")
    checkpoint_every_steps: int = option(500, lambda v: v >= 1, "an int >= 1")
    keep_checkpoints: int = option(3, lambda v: v >= 1, "an int >= 1")
    progress_bar: bool = True
    stop_after_steps: int = option(
        0, lambda v: v >= 0, "0 or a step count"
    )  # >0: stop each stage early (tests)


SECTIONS = {
    "data": DataSettings,
    "teacher": TeacherSettings,
    "finetune": FinetuneSettings,
    "student": StudentSettings,
    "distill": DistillSettings,
    "eval": EvalSettings,
    "loop": LoopSettings,
}


@dataclasses.dataclass(frozen=True)
class RunSettings:
    seed: int = option(0, lambda v: v >= 0, "an int >= 0")
    # bf16 on GPU/TPU with float32 parameters, float32 on CPU
    compute_dtype: str = option("auto", *one_of("auto", "float32", "bfloat16", "float16"))
    # Comma-separated student variants: random, random+kd, transfer, transfer+kd.
    runs: str = "transfer+kd"
    # '0,1,2': every student variant once per seed, against one teacher (trained with `seed`);
    # '' = once, with `seed`.
    seeds: str = option(
        "",
        lambda v: all(p.strip().isdigit() for p in v.split(",") if p.strip()),
        "comma-separated ints >= 0, e.g. '0,1,2'",
    )
    # Rows of one table in one workdir, e.g. 'alpha=0,0.25,0.5' or, several keys a row,
    # 'alpha_start=0,alpha_end=0.5; alpha_start=0.5,alpha_end=1' (keys of distill, or
    # student.model): every row trains each variant per seed against the one teacher, in
    # its own stage (swin_flax/pipeline/sweeps.py). '' = one row, the settings as they are.
    sweep: str = option(
        "",
        lambda v: isinstance(v, str) and (not v.strip() or "=" in v),
        "'' or rows such as 'alpha=0,0.25' or 'w_d=1; w_d=13'",
    )
    evaluate_teacher: bool = True
    data: DataSettings = DataSettings()
    teacher: TeacherSettings = TeacherSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    student: StudentSettings = StudentSettings()
    distill: DistillSettings = DistillSettings()
    eval: EvalSettings = EvalSettings()
    loop: LoopSettings = LoopSettings()

    @classmethod
    def from_config(cls, config, *, check_ranges: bool = True) -> RunSettings:
        """The typed settings of an ml_collections config (or a plain dict), every unknown
        key and (unless the caller adds its own checks to them) out-of-range value reported
        in one error."""
        values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        problems = _unknown_keys(values, cls)
        if problems:
            raise UserInputError(
                "unknown config keys: "
                + ", ".join(problems)
                + ". Valid keys are declared in swin_flax/settings.py."
            )
        sections = {
            name: kind(**_normalised(kind, values.get(name, {}))) for name, kind in SECTIONS.items()
        }
        top = {k: v for k, v in values.items() if k not in SECTIONS}
        settings = cls(**_normalised(cls, top), **sections)
        problems = range_problems(settings) if check_ranges else []
        if problems:
            raise UserInputError("invalid config:\n  - " + "\n  - ".join(problems))
        return settings


def student_seeds(settings: RunSettings) -> list[int]:
    seeds = [int(p) for p in settings.seeds.split(",") if p.strip()]
    return seeds or [settings.seed]


def default_config_dict() -> dict:
    """The defaults as the nested dict configs/common.py turns into a ConfigDict."""
    return dataclasses.asdict(RunSettings())


def resumable_keys() -> frozenset[str]:
    """Dotted keys a stage may resume with changed (the rest of its fingerprint is locked)."""
    return frozenset(
        f"{name}.{f.name}"
        for name, kind in SECTIONS.items()
        for f in dataclasses.fields(kind)
        if f.metadata.get("resumable")
    )


def range_problems(settings: RunSettings) -> list[str]:
    problems = []
    for prefix, obj in [("", settings)] + [(f"{n}.", getattr(settings, n)) for n in SECTIONS]:
        for f in dataclasses.fields(obj):
            check = f.metadata.get("check")
            value = getattr(obj, f.name)
            if check is not None and not check(value):
                problems.append(f"{prefix}{f.name} must be {f.metadata['expected']}, got {value!r}")
    return problems


def _field_names(kind) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


def _unknown_keys(values: dict, cls) -> list[str]:
    problems = []

    def check(section: dict, kind, prefix: str):
        known = _field_names(kind)
        for key in section:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                problems.append(
                    f"{prefix}{key}" + (f" (did you mean {prefix}{hint[0]}?)" if hint else "")
                )
            elif prefix == "" and key in SECTIONS and isinstance(section[key], dict):
                check(section[key], SECTIONS[key], f"{key}.")

    check(values, cls, "")
    return problems


def _normalised(kind, section: dict) -> dict:
    """Lists from JSON or the command line become tuples, as the dataclasses declare."""
    names = set(_field_names(kind))
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in section.items()
        if k in names and k not in SECTIONS
    }
