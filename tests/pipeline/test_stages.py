"""The work directory's bookkeeping (`swin_flax.pipeline.stages`): a stage resumes only with
the settings it started with, a damaged record is named, a finished stage is reused or
rebuilt, an unfinished one stops the run with the right exception; what a rerun would do is
read without touching anything; one run per work directory (a second is refused at once,
naming the holder, and the lock dies with its holder, even on kill -9)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

import swin_flax
from configs import demo
from swin_flax.data.sizes import SplitSizes
from swin_flax.errors import RunPreempted, UserInputError, WorkdirInUseError
from swin_flax.pipeline import plan, stages
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.stages import LOCK_FILE, exclusive_workdir
from swin_flax.training.loop import StageResult
from tests.helpers import REPO, TEACHER_ONLY, assert_trees_equal, run_train_py, smoke_config


def student_record(config) -> dict:
    """The transfer+kd student's stage_config.json (its StageSpec's record)."""
    run_plan = plan.build_plan(plan.load_settings(config), "/w", SplitSizes(96, 16, 100))
    return run_plan.stage("student_transfer_kd").record


def test_a_stage_refuses_to_resume_with_other_settings(tmp_path, capsys):
    from swin_flax.pipeline.stages import check_stage_config

    config = smoke_config()
    check_stage_config(tmp_path, student_record(config))

    # Nothing to lose yet (no checkpoint): a stage that failed early starts with new settings.
    config.distill.epochs = 5
    check_stage_config(tmp_path, student_record(config))
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)  # now it has progress
    assert stages.stage_status(tmp_path, student_record(config)) == "resumes at step 4"

    config.distill.peak_lr = 1e-5  # allowed: e.g. to rescue a diverged run
    config.data.data_dir = "/moved/tfds"  # allowed: the data moved, or the rerun is offline
    config.data.download = False
    check_stage_config(tmp_path, student_record(config))
    note = capsys.readouterr().err
    assert note.startswith("note: ") and "resumes with changed" in note
    assert {"distill.peak_lr", "data.data_dir", "data.download"} <= set(
        note.split("changed ")[1].strip().split(", ")
    )

    config.distill.epochs = 7
    assert stages.stage_status(tmp_path, student_record(config)) == (
        "refused: started with other settings (distill.epochs)"
    )
    with pytest.raises(UserInputError, match=r"different settings \(distill.epochs\).*--workdir"):
        check_stage_config(tmp_path, student_record(config))


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


def test_a_student_records_its_teachers_settings_plus_its_own():
    config = smoke_config()
    config.seeds = "3"
    settings = plan.load_settings(config)
    run_plan = plan.build_plan(settings, "/w", SplitSizes(96, 16, 100))
    teacher = run_plan.stage("teacher").record
    student = run_plan.stage("student_transfer_kd_seed3").record
    assert {k: student[k] for k in teacher} == teacher
    assert (student["variant"], student["student_seed"]) == ("transfer_kd", 3)
    assert student["student"]["model"] == settings.student.model
    assert set(student) - set(teacher) == {"student", "distill", "variant", "student_seed"}


def test_progress_is_a_numbered_checkpoint_or_the_done_marker(tmp_path):
    assert not stages.stage_has_progress(tmp_path)
    assert stages.stage_status(tmp_path, {}) == "not started"
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp-1").mkdir(parents=True)
    assert not stages.stage_has_progress(tmp_path)  # an unfinished save is no progress
    (tmp_path / "checkpoints" / "12").mkdir()
    assert stages.stage_has_progress(tmp_path) and not stages.stage_is_done(tmp_path)
    done = tmp_path / "done"
    done.mkdir()
    (done / stages.STAGE_DONE_FILE).write_text("{}")
    assert stages.stage_is_done(done) and stages.stage_has_progress(done)
    assert stages.stage_status(done, {}) == "refused: it has no stage_config.json"
    (done / stages.STAGE_CONFIG_FILE).write_text('{"seed": 0}')
    assert stages.stage_status(done, {"seed": 0, "added later": 1}) == "done"


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
    from swin_flax.weights import checkpoint

    model = swin_flax.create_model("swin_pico", num_classes=3)
    result = StageResult(
        params=swin_flax.init_params(model, 0), steps=3, completed=True, final_metrics={}
    )
    train = ArrayDataset(
        np.zeros((3, 8, 8, 3), np.uint8), np.arange(3, dtype=np.int32), 3, ("cat", "dog", "ship")
    )
    stages.finish_stage(tmp_path / "a", model, result, train.class_names, 64)
    final = tmp_path / "a" / stages.FINAL_MODEL_DIR
    assert checkpoint.load_class_names(final) == ["cat", "dog", "ship"]
    assert checkpoint.load_preprocessing(final) == {"stored_size": 64}
    stages.finish_stage(tmp_path / "b", model, result, train.class_names, 0)
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


# --- one run per work directory ------------------------------------------------------


@pytest.mark.multiprocess
def test_a_second_run_on_a_locked_workdir_exits_at_once_naming_the_holder(tmp_path):
    with exclusive_workdir(tmp_path):
        start = time.monotonic()
        second = run_train_py(*TEACHER_ONLY, "--workdir", str(tmp_path))
    assert second.returncode == 2
    assert (
        f"error: workdir {tmp_path} is in use by pid {os.getpid()} on host {socket.gethostname()}"
    ) in second.stderr
    assert "Traceback" not in second.stderr
    assert time.monotonic() - start < 60  # no training, no data loading
    assert not (tmp_path / "teacher").exists()


@pytest.mark.multiprocess
def test_the_lock_dies_with_its_holder_even_on_kill_minus_nine(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from swin_flax.pipeline.stages import exclusive_workdir as lock\n"
            "with lock(sys.argv[2]):\n print('held', flush=True); time.sleep(600)",
            str(REPO),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirInUseError, match=f"in use by pid {holder.pid}"):
        with exclusive_workdir(tmp_path):
            pass
    holder.kill()
    holder.wait()
    with exclusive_workdir(tmp_path):  # a crashed run never blocks the next one
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


def test_the_lock_is_exclusive_even_within_one_process_and_released_after(tmp_path):
    with exclusive_workdir(tmp_path):
        holder = (tmp_path / LOCK_FILE).read_text().split()
        assert holder == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(WorkdirInUseError, match="wait for that run to finish"):
            with exclusive_workdir(tmp_path):
                pass
    with exclusive_workdir(tmp_path):  # released when the block ended
        pass


def test_a_disabled_lock_neither_locks_nor_writes(tmp_path):
    with exclusive_workdir(tmp_path, enabled=False):  # the processes other than 0 of a run
        assert not (tmp_path / LOCK_FILE).exists()
        with exclusive_workdir(tmp_path):  # process 0 of the same run still gets the lock
            pass
