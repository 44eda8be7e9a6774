"""Stage bookkeeping (`swin_flax.pipeline.stages`): a stage resumes only with the settings
it started with, a damaged record is named, a finished stage is reused or rebuilt, and an
unfinished one stops the run with the right exception."""

import json
import shutil

import jax.numpy as jnp
import pytest

import swin_flax
from configs import demo
from swin_flax.errors import RunPreempted, UserInputError
from swin_flax.pipeline import stages
from swin_flax.pipeline.run import run_pipeline
from swin_flax.settings import RunSettings
from swin_flax.training.loop import StageResult
from tests.helpers import assert_trees_equal, smoke_config


def test_a_stage_refuses_to_resume_with_other_settings(tmp_path, capsys):
    from swin_flax.pipeline.stages import check_stage_config, student_fingerprint

    config = smoke_config()
    variant = "transfer_kd"
    check_stage_config(tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0))

    # Nothing to lose yet (no checkpoint): a stage that failed early starts with new settings.
    config.distill.epochs = 5
    check_stage_config(tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0))
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)  # now it has progress

    config.distill.peak_lr = 1e-5  # allowed: e.g. to rescue a diverged run
    config.data.data_dir = "/moved/tfds"  # allowed: the data moved, or the rerun is offline
    config.data.download = False
    check_stage_config(tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0))
    note = capsys.readouterr().err
    assert note.startswith("note: ") and "resumes with changed" in note
    assert {"distill.peak_lr", "data.data_dir", "data.download"} <= set(
        note.split("changed ")[1].strip().split(", ")
    )

    config.distill.epochs = 7
    with pytest.raises(UserInputError, match=r"different settings \(distill.epochs\).*--workdir"):
        check_stage_config(
            tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0)
        )


def test_a_damaged_stage_config_names_the_file(tmp_path):
    from swin_flax.pipeline.stages import check_stage_config

    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "stage_config.json").write_text("{garbage")
    with pytest.raises(UserInputError, match=r"stage_config.json is damaged .*delete the stage"):
        check_stage_config(tmp_path, {"seed": 0})


@pytest.mark.slow
def test_a_finished_stage_without_final_model_is_rebuilt_from_its_checkpoint(tmp_path):

    config = demo.get_config("smoke")
    config.runs = ""
    config.eval.throughput_batch_size = 0
    first = run_pipeline(config, tmp_path)
    _, before = swin_flax.load_checkpoint(tmp_path / "teacher" / "final_model")
    shutil.rmtree(tmp_path / "teacher" / "final_model")
    again = run_pipeline(config, tmp_path)
    _, after = swin_flax.load_checkpoint(tmp_path / "teacher" / "final_model")
    assert_trees_equal(before, after)
    assert again == first


def test_a_student_fingerprint_is_its_teachers_plus_its_own_settings():
    settings = RunSettings.from_config(smoke_config())
    teacher = stages.teacher_fingerprint(settings)
    student = stages.student_fingerprint(settings, "transfer_kd", 3)
    assert {k: student[k] for k in teacher} == teacher
    assert (student["variant"], student["student_seed"]) == ("transfer_kd", 3)
    assert student["student"]["model"] == settings.student.model
    assert set(student) - set(teacher) == {"student", "distill", "variant", "student_seed"}


def test_progress_is_a_numbered_checkpoint_or_the_done_marker(tmp_path):
    assert not stages.stage_has_progress(tmp_path)
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp-1").mkdir(parents=True)
    assert not stages.stage_has_progress(tmp_path)  # an unfinished save is no progress
    (tmp_path / "checkpoints" / "12").mkdir()
    assert stages.stage_has_progress(tmp_path) and not stages.stage_is_done(tmp_path)
    done = tmp_path / "done"
    done.mkdir()
    (done / stages.STAGE_DONE_FILE).write_text("{}")
    assert stages.stage_is_done(done) and stages.stage_has_progress(done)


def test_a_stage_that_ended_early_stops_the_run_with_the_reason(tmp_path):
    model = swin_flax.create_model("swin_pico", num_classes=4)
    stopped = StageResult(
        params={}, steps=7, completed=False, final_metrics={}, stopped_by="SIGTERM"
    )
    with pytest.raises(RunPreempted, match="student stopped by SIGTERM after step 7"):
        stages.finish_stage(tmp_path / "student", model, stopped)
    partial = StageResult(params={}, steps=6, completed=False, final_metrics={})
    with pytest.raises(stages.StageStopped, match="student at step 6; run the same command"):
        stages.finish_stage(tmp_path / "student", model, partial)
    assert not (tmp_path / "student").exists()  # nothing written for an unfinished stage


def test_a_finished_stage_is_written_for_flax_and_timm_and_marked_done_last(tmp_path):
    model = swin_flax.create_model("swin_pico", num_classes=4)
    params = swin_flax.init_params(model, 0)
    result = StageResult(params=params, steps=12, completed=True, final_metrics={"loss": 0.5})
    stage = tmp_path / "teacher"
    stages.finish_stage(stage, model, result)
    assert stages.finished_model_available(stage)
    _, loaded = stages.load_finished_model(stage, dtype=jnp.float32)
    assert_trees_equal(params, loaded)
    assert (stage / stages.TIMM_EXPORT_FILE).is_file()
    assert json.loads((stage / stages.STAGE_DONE_FILE).read_text()) == {
        "steps": 12,
        "final_metrics": {"loss": 0.5},
    }


def test_final_model_stores_the_training_data_class_names_and_stored_size(tmp_path):
    """export.py and predict.py read them: classes matched by name, images resized as in
    training (issue 29: no stage stored them)."""
    import numpy as np

    from swin_flax.data.dataset import ArrayDataset
    from swin_flax.settings import DataSettings
    from swin_flax.weights import checkpoint

    model = swin_flax.create_model("swin_pico", num_classes=3)
    result = StageResult(
        params=swin_flax.init_params(model, 0), steps=3, completed=True, final_metrics={}
    )
    train = ArrayDataset(
        np.zeros((3, 8, 8, 3), np.uint8), np.arange(3, dtype=np.int32), 3, ("cat", "dog", "ship")
    )
    stages.finish_stage(tmp_path / "a", model, result, train, DataSettings(stored_size=64))
    final = tmp_path / "a" / stages.FINAL_MODEL_DIR
    assert checkpoint.load_class_names(final) == ["cat", "dog", "ship"]
    assert checkpoint.load_preprocessing(final) == {"stored_size": 64}
    stages.finish_stage(tmp_path / "b", model, result, train, DataSettings(stored_size=0))
    assert checkpoint.load_preprocessing(tmp_path / "b" / stages.FINAL_MODEL_DIR) == {
        "stored_size": None
    }


@pytest.mark.parametrize("progress", ["checkpoint", "finished"])
def test_a_stage_with_progress_but_no_stage_config_is_not_reused_under_any_settings(
    tmp_path, progress
):
    from swin_flax.pipeline.stages import check_stage_config

    stage = tmp_path / "student_transfer"
    if progress == "checkpoint":
        (stage / "checkpoints" / "4").mkdir(parents=True)
    else:
        (stage / stages.FINAL_MODEL_DIR).mkdir(parents=True)
        (stage / stages.STAGE_DONE_FILE).write_text('{"steps": 12}')
    with pytest.raises(UserInputError) as caught:
        check_stage_config(stage, {"distill": {"epochs": 2.0}})
    message = str(caught.value)
    assert f"{stage} has no {stages.STAGE_CONFIG_FILE}" in message
    assert "cannot prove" in message and "delete the stage directory" in message
    assert not (stage / stages.STAGE_CONFIG_FILE).exists()  # the evidence is not overwritten


def test_a_stage_config_that_is_not_a_mapping_is_named_as_damaged(tmp_path):
    from swin_flax.pipeline.stages import check_stage_config

    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "stage_config.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match=r"stage_config.json is damaged"):
        check_stage_config(tmp_path, {"seed": 0})


def test_a_finished_stage_whose_final_model_is_damaged_is_one_error_saying_what_to_do(tmp_path):
    from tests.weights.test_checkpoint import cut_data_files

    model = swin_flax.create_model("swin_pico", num_classes=4)
    result = StageResult(
        params=swin_flax.init_params(model, 0), steps=12, completed=True, final_metrics={}
    )
    stage = tmp_path / "teacher"
    stages.finish_stage(stage, model, result)
    cut_data_files(stage / stages.FINAL_MODEL_DIR / "params")
    assert stages.finished_model_available(stage)  # its directories are all there
    with pytest.raises(UserInputError) as caught:
        stages.load_finished_model(stage, dtype=jnp.float32)
    message = str(caught.value)
    assert f"{stage / stages.FINAL_MODEL_DIR} is damaged" in message
    assert f"move {stage / stages.FINAL_MODEL_DIR} away" in message
    assert "rebuilt from the stage's newest checkpoint" in message
