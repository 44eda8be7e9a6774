"""The plan's checks (`swin_flax.pipeline.checks`): every mistake that can be found before
anything trains is reported then, all at once."""

import dataclasses
import math

import pytest

import swin_flax
from configs import demo
from swin_flax.data import placement
from swin_flax.data.sizes import SplitSizes
from swin_flax.errors import UserInputError
from swin_flax.pipeline import checks, plan, students
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.sweeps import SweepRow
from swin_flax.settings import RunSettings
from tests.helpers import smoke_config


def test_out_of_range_values_are_reported_together_before_any_data_loads(tmp_path):
    config = smoke_config()
    config.data.crop_padding = -1
    config.eval.throughput_batch_size = -1
    config.student.cut_points = (5,)
    with pytest.raises(UserInputError) as info:
        run_pipeline(config, tmp_path)  # no mock data: the check must come first
    message = str(info.value)
    assert "data.crop_padding must be an int >= 0" in message
    assert "eval.throughput_batch_size must be 0 (no throughput) or a batch size" in message
    assert "student.cut_points must be empty" in message and "got (5,)" in message


def test_student_batch_larger_than_the_data_fails_before_the_teacher_trains(tmp_path, mock_tfds):
    config = smoke_config()
    config.distill.batch_size = 64
    with (
        mock_tfds.testing.mock_data(num_examples=32),
        pytest.raises(
            UserInputError, match=r"distill.batch_size 64 is larger than the training set"
        ),
    ):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()


def test_impossible_cut_points_are_a_clear_error(tmp_path, mock_tfds):
    tfds = mock_tfds
    config = smoke_config()
    config.student.cut_points = (9, 4)
    with tfds.testing.mock_data(num_examples=32), pytest.raises(ValueError, match="cut"):
        run_pipeline(config, tmp_path)


def test_cut_points_that_copy_a_block_into_the_other_window_kind_fail_before_training(
    tmp_path, mock_tfds
):
    config = smoke_config()  # teacher swin_pico (2, 2, 4, 2): stages 0 and 1 shift windows
    config.student.cut_points = (2, 3)  # stage 1 keeps its block 1 (shifted) in slot 0
    config.student.tail_init = "teacher"
    with (
        mock_tfds.testing.mock_data(num_examples=32),
        pytest.raises(UserInputError) as info,
    ):
        run_pipeline(config, tmp_path)
    assert str(info.value).startswith(
        "invalid config:\n  - student.cut_points=(2, 3) with student.tail_init='teacher' puts teacher blocks into "
        "slots of the other window kind (stage 1: teacher block 1 (shifted windows) would "
        "become the student's block 0 (unshifted windows)); set tail_init='random'"
    )
    assert not (tmp_path / "teacher").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: setattr(c.distill, "joint", "harmonik"), "harmonik"),
        (lambda c: setattr(c.distill, "joint", "hard_only"), "hard_only"),
        (lambda c: setattr(c.student, "tail_init", "copy"), "tail_init"),
        (lambda c: setattr(c.student, "model", "swin_q"), "swin_q"),
        (lambda c: setattr(c, "compute_dtype", "int8"), "compute_dtype"),
        (
            lambda c: setattr(c.distill, "feature_weights", "0,1,1"),
            r"distill.feature_weights='0,1,1' must be 4 finite weights >= 0, one per stage of "
            r"the teacher, e.g. '0,0,1,1'",
        ),
        (
            lambda c: setattr(c.distill, "feature_weights", "0,0,1,x"),
            r"distill.feature_weights must be '' or a weight >= 0 per stage, got '0,0,1,x'",
        ),
        (
            lambda c: setattr(c.distill, "feature_weights", "0,0.,1,1..5"),
            r"distill.feature_weights='0,0.,1,1..5' must be numbers",
        ),
        (
            lambda c: (
                setattr(c.distill, "feature_weights", "0 0 1 1"),
                setattr(c.distill, "teacher_logits", "record"),
            ),
            r"distill.feature_weights needs the teacher live: stage outputs are not recorded",
        ),
    ],
)
def test_config_mistakes_fail_before_any_data_is_loaded(tmp_path, change, message):
    config = smoke_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        run_pipeline(config, tmp_path)  # no mock data: loading would fail differently


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda c: setattr(c.distill, "peak_lr", -1e-3),
            "distill.peak_lr must be a finite learning rate > 0",
        ),
        (lambda c: setattr(c.finetune, "peak_lr", math.nan), "finetune.peak_lr must be a finite"),
        (lambda c: setattr(c.distill, "end_lr", math.inf), "distill.end_lr must be a finite"),
        (lambda c: setattr(c.distill, "w_d", -2.0), "distill.w_d must be a finite weight >= 0"),
        (lambda c: setattr(c.distill, "alpha", 1.5), r"distill.alpha must be a weight in \[0, 1\]"),
        (lambda c: setattr(c.distill, "label_smoothing", 1.0), "distill.label_smoothing"),
        (
            lambda c: setattr(c.distill, "warmup_epochs", 2.0),
            r"distill.warmup_epochs \(2.0\) must be shorter than distill.epochs \(2.0\)",
        ),
        (
            lambda c: setattr(c.student, "model", "swin_s"),
            "cannot transfer blocks from swin_pico to swin_s: their embed_dim differ",
        ),
        (
            lambda c: (
                setattr(c.teacher, "model", "swin_pico_n"),
                setattr(c.student, "model", "swin_pico"),
            ),
            # it was told to set student.cut_points, which cannot make a student deeper
            r"student.model swin_pico cannot be cut from teacher.model swin_pico_n: the student "
            r"\(depths \(2, 2, 4, 2\)\) is deeper than its teacher \(depths \(2, 2, 2, 2\)\): "
            r"stage 2 has 4 blocks, the teacher's 2. .*choose a smaller student or a deeper "
            r"teacher$",
        ),
        (
            lambda c: setattr(c.data, "image_size", 100),  # the option set, not the model's
            r"\n  - teacher.model swin_pico cannot take data.image_size=100: data.image_size 100 "
            r"must be divisible by patch_size \* 2\*\*\(stages-1\) = 16; the nearest valid "
            r"sizes are 96 and 112$",
        ),
    ],
)
def test_late_mistakes_are_reported_before_any_data_loads(tmp_path, change, message):
    config = smoke_config()  # tfds cifar100: loading it here would fail differently
    change(config)
    with pytest.raises(UserInputError, match=message):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()


def test_several_bad_values_are_reported_together(tmp_path):
    config = smoke_config()
    config.distill.peak_lr = math.nan
    config.finetune.weight_decay = -1.0
    with pytest.raises(UserInputError) as info:
        plan.build_plan(plan.load_settings(config), tmp_path)
    assert "distill.peak_lr must be a finite learning rate > 0, got nan" in str(info.value)
    assert "finetune.weight_decay must be a finite number >= 0, got -1.0" in str(info.value)


def test_a_finetuned_teacher_of_another_architecture_is_an_error(tmp_path):
    model = swin_flax.create_model("swin_pico", num_classes=10)
    swin_flax.save_checkpoint(tmp_path / "pico", model, swin_flax.init_params(model, 0))
    config = smoke_config()
    config.teacher.finetuned = str(tmp_path / "pico")
    config.teacher.model = "swin_micro"  # patch 4 where the checkpoint has patch 2
    config.student.model = "swin_micro_n"
    with pytest.raises(
        UserInputError,
        match=r"different architecture than teacher.model "
        r"'swin_micro'.*patch_size 2 vs 4",
    ):
        run_pipeline(config, tmp_path / "work")


def test_an_unwritable_workdir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # root ignores permission bits, so block with a file instead
    with pytest.raises(UserInputError, match=r"cannot write to the workdir .*a_file/run"):
        run_pipeline(smoke_config(), blocker / "run")


def test_a_data_set_too_large_for_the_device_is_reported_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(placement, "device_memory_bytes", lambda: (4 * 2**20, "test memory"))
    config = demo.get_config("smoke")
    with pytest.raises(
        UserInputError,
        match=r"more than 50% of the 4.0 MiB of test memory; stream them from disk with "
        r"data.placement=stream \(or auto\), store the images smaller with data.stored_size",
    ):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()


def test_architecture_differences_ignore_the_classes_and_the_regularisation():
    stored = swin_flax.model_config(swin_flax.create_model("swin_pico", num_classes=10))
    expected = swin_flax.model_config(
        swin_flax.create_model("swin_pico", num_classes=100, drop_path_rate=0.3)
    )
    assert students.architecture_differences(stored, expected) == []
    expected["window_size"] = 8
    assert students.architecture_differences(stored, expected) == ["window_size 4 vs 8"]


def test_only_the_stages_that_train_must_fit_their_batch_in_the_data(monkeypatch):
    settings = RunSettings.from_config(smoke_config())
    batch = settings.finetune.batch_size
    rows = [(SweepRow(), settings)]
    data = SplitSizes(train=batch - 1, test=10, num_classes=100)
    assert checks.data_problems(settings, rows, [], data, None) == [  # the teacher trains
        f"finetune.batch_size {batch} is larger than the training set ({batch - 1} examples); "
        "lower it"
    ]
    finetuned = dataclasses.replace(
        settings, teacher=dataclasses.replace(settings.teacher, finetuned="/a/teacher")
    )
    monkeypatch.setattr(
        students,
        "teacher_architecture",
        lambda *a: swin_flax.preset_config("swin_pico").replace(num_classes=100),
    )
    rows = [(SweepRow(), finetuned)]
    assert checks.data_problems(finetuned, rows, [], data, None) == []  # nothing trains


# --- student.keep_blocks and student.budget ----------------------------------------------


@pytest.mark.parametrize(
    "keep, message",
    [
        ("0,1;0,2;0,1;0,1", "stage 1 has no block 2: its blocks are 0..1"),  # unknown block
        ("0,1;;0,1;0,1", "stage 1 keeps no block"),  # an empty stage
        ("0,1;1;0,1;0,1", "stage 1: block 1 has shifted windows but would be the student's"),
        ("0,1;0,1;0,1", r"names 3 stage\(s\)"),
    ],
)
def test_invalid_keep_blocks_are_one_clear_error_before_any_data_loads(tmp_path, keep, message):
    config = smoke_config()  # teacher swin_pico (2, 2, 4, 2): stages 0 and 1 shift windows
    config.student.keep_blocks = keep
    with pytest.raises(UserInputError, match=message) as info:
        run_pipeline(config, tmp_path)  # no mock data: the check must come first
    assert str(info.value).count("\n  - ") == 1  # one problem, one error
    assert not (tmp_path / "teacher").exists()


def test_keep_blocks_contradicting_other_student_settings_fail_before_any_data_loads(tmp_path):
    config = smoke_config()
    config.student.keep_blocks = "first"
    config.student.cut_points = (6, 10)
    config.student.tail_init = "teacher"
    with pytest.raises(UserInputError) as info:
        run_pipeline(config, tmp_path)
    assert "both choose the blocks to keep: set one" in str(info.value)
    assert "use keep_blocks=first+teacher_tail" in str(info.value)


def test_a_policy_for_a_student_model_of_other_widths_is_an_error(tmp_path):
    config = smoke_config()
    config.student.keep_blocks = "even"
    config.student.model = "swin_n"  # embed 96, the teacher swin_pico 32
    with pytest.raises(UserInputError, match="their embed_dim differ"):
        run_pipeline(config, tmp_path)


def test_a_budget_no_student_meets_fails_before_the_teacher_trains(tmp_path, mock_tfds):
    config = smoke_config()
    config.student.budget = "params:10k"
    with (
        mock_tfds.testing.mock_data(num_examples=32),
        pytest.raises(UserInputError, match=r"params:10,000 cannot be met.*one block per stage"),
    ):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()
