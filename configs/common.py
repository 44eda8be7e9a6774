"""Every option of `train.py`, with the paper's recipe as defaults.

Experiment configs start from `get_base_config()` and change what they need; `train.py`
rejects keys that are not declared here, so a typo is an error rather than a silent
default. Batch size and augmentation are not given in the paper: the values below are
our choices (batch 128, random crop with 4-pixel padding at 32x32, horizontal flip).
"""

import difflib

import ml_collections

from swin_flax.errors import UserInputError


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.compute_dtype = "auto"  # bf16 on GPU/TPU with float32 parameters, float32 on CPU

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # tfds | image_folder | digits
    c.data.name = "cifar100"  # any TFDS image-classification data set
    c.data.data_dir = ""  # TFDS data_dir ('' = TFDS default, ~/tensorflow_datasets)
    c.data.download = True  # try to download and prepare when not found in data_dir
    c.data.root = ""  # image_folder: root/<split>/<class>/*.jpg
    c.data.stored_size = 0  # resize stored images to this side (0 = keep; needed for mixed sizes)
    c.data.skip_bad_images = False  # image_folder: skip unreadable files (listed) instead of failing
    c.data.train_split = "train"
    c.data.test_split = "test"
    c.data.validation_fraction = 0.0  # >0: evaluate on a seeded carve-out of train instead of test
    c.data.split_seed = 0  # how digits / the validation carve-out are split (not c.seed)
    c.data.image_size = 224  # model input side; resized on the device inside the step
    c.data.crop_padding = 4  # random crop at the stored resolution after this zero padding
    c.data.flip = True  # random horizontal flip

    c.teacher = ml_collections.ConfigDict()
    c.teacher.model = "swin_t"
    # random | timm:<timm name or .safetensors path> | a convert_timm_weights.py directory
    c.teacher.init = "timm:swin_tiny_patch4_window7_224.ms_in1k"
    c.teacher.finetuned = ""  # a finished teacher (load_checkpoint dir): skip fine-tuning
    c.teacher.drop_path_rate = 0.2

    c.finetune = _stage_defaults(epochs=60)
    c.finetune.label_smoothing = 0.1

    c.student = ml_collections.ConfigDict()
    c.student.model = "swin_m"  # its depths give the cut points (Algorithm 1) ...
    c.student.cut_points = ()  # ... unless given here as (p1, p2): keep blocks [0,p1) + [p2,end)
    c.student.tail_init = "random"  # random (paper) | teacher: init G-hat from T[p2:]
    c.student.drop_path_rate = 0.1

    # Comma-separated student variants: random, random+kd, transfer, transfer+kd.
    c.runs = "transfer+kd"
    c.evaluate_teacher = True

    c.distill = _stage_defaults(epochs=60)
    c.distill.label_smoothing = 0.0
    c.distill.joint = "weighted_harmonic"  # arithmetic | linear_alpha | harmonic | weighted_harmonic
    c.distill.distillation = "mse"  # mse (paper) | kl
    c.distill.temperature = 1.0  # kl only
    c.distill.alpha = 0.25  # arithmetic: weight of the hard-label loss (Table IV)
    c.distill.alpha_start = 0.0  # linear_alpha: alpha goes from start to end (Table VI)
    c.distill.alpha_end = 0.5
    c.distill.w_d = 13.0  # weighted harmonic (Eq. 4, Table VII: best w_d = 13)
    c.distill.w_s = 1.0

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256
    c.eval.throughput_batch_size = 64  # 0 disables the throughput measurement
    c.eval.throughput_repeats = 10

    c.loop = ml_collections.ConfigDict()
    c.loop.log_every_steps = 50
    c.loop.checkpoint_every_steps = 500
    c.loop.keep_checkpoints = 3
    c.loop.progress_bar = True
    c.loop.stop_after_steps = 0  # >0: stop each stage after this many steps (tests, debugging)
    return c


def _stage_defaults(epochs: float) -> ml_collections.ConfigDict:
    """The paper's optimisation recipe (from TinyViT): AdamW, wd 0.01, 5 warm-up epochs, cosine."""
    s = ml_collections.ConfigDict()
    s.epochs = float(epochs)  # a float field, so --config.*.epochs=0.5 is accepted
    s.batch_size = 128
    s.peak_lr = 2e-4
    s.warmup_epochs = 5.0
    s.weight_decay = 0.01
    s.end_lr = 0.0
    s.grad_clip_norm = 0.0  # 0 = no clipping
    return s


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A few steps of everything on tiny settings (tests: under tfds.testing.mock_data)."""
    c.compute_dtype = "float32"
    c.data.image_size = 32
    c.teacher.model = "swin_pico"
    c.teacher.init = "random"
    c.student.model = "swin_pico_n"
    for stage in (c.finetune, c.distill):
        stage.epochs = 2
        stage.batch_size = 8
        stage.warmup_epochs = 1
    c.eval.batch_size = 16
    c.eval.throughput_batch_size = 8
    c.eval.throughput_repeats = 2
    c.loop.log_every_steps = 2
    c.loop.checkpoint_every_steps = 4
    c.loop.progress_bar = False
    return c


def full_framework_config(student: str, arg: str | None) -> ml_collections.ConfigDict:
    """Algorithm 1 end to end for one student: fine-tune, transfer, distil, evaluate."""
    c = get_base_config()
    c.student.model = student
    c.runs = "transfer+kd"
    if parse_args(arg).get("smoke"):
        apply_smoke(c)
    return c


def parse_args(arg: str | None, allowed: tuple[str, ...] = ("smoke",)) -> dict:
    """'smoke,alpha=0.5' -> {'smoke': True, 'alpha': '0.5'}; a key not in `allowed` is an
    error (a typo such as 'smok' must not silently start the full run)."""
    out = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise UserInputError(
                f"unknown config argument {key!r} in ':{arg}'"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; this config accepts: {', '.join(allowed)}")
        out[key] = value.strip() if sep else True
    return out


def number_arg(args: dict, key: str, default: float) -> float:
    """A numeric ':key=value' argument, with an error that names it."""
    value = args.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"config argument {key} must be a number, got {value!r}") from None
