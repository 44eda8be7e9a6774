"""One training stage (`swin_flax.training.loop`): resumable bit for bit, whether it was
interrupted by the test, by a stop request or by kill -9; the same parameters whether its
data is resident or streamed; a batch that cannot be read (a damaged file, a failed thread)
saves the steps before it and is one error; a resume on changed data says so; NaN stops it
with the last good checkpoint kept; impossible batch sizes are refused before anything
compiles."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import swin_flax
from swin_flax.data import sources
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.batches import epoch_batches
from swin_flax.data.image_folder import load_image_folder
from swin_flax.errors import DataLoaderError, UserInputError
from swin_flax.settings import LoopSettings, LossSettings, OptimSettings
from swin_flax.training import preemption
from swin_flax.training.loop import check_data_unchanged, train_stage
from tests.helpers import (
    REPO,
    assert_trees_equal,
    checkpoint_steps,
    run_tiny_stage,
    run_train_py,
    streamed_folder,
    tiny_dataset,
    tiny_image_folder,
)


@pytest.mark.slow
def test_resume_after_interruption_gives_identical_parameters(tmp_path):
    full = run_tiny_stage(tmp_path / "full")
    assert full.completed and full.steps == 12

    # Stops after step 6; the newest checkpoint is step 4, so steps 5-6 are lost and redone.
    partial = run_tiny_stage(tmp_path / "resumed", stop_after=6)
    assert not partial.completed and partial.steps == 6
    resumed = run_tiny_stage(tmp_path / "resumed")
    assert resumed.completed and resumed.steps == 12
    assert_trees_equal(full.params, resumed.params)

    lines = [
        json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    # Step 6 was logged by the interrupted run and again after the resume: kept once.
    assert [l["step"] for l in lines] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "loss_hard", "learning_rate", "grad_norm", "accuracy"} <= set(lines[-1])

    # Resuming a finished stage runs no step but still reports the final metrics.
    again = run_tiny_stage(tmp_path / "resumed")
    assert again.completed and again.steps == 12
    assert again.final_metrics["loss"] == pytest.approx(lines[-1]["loss"])
    assert again.final_metrics == resumed.final_metrics


@pytest.mark.slow
def test_a_feature_distilling_stage_resumes_bit_for_bit_and_keeps_no_projection(tmp_path):
    """Stage features from a wider teacher: projections train beside the student, are
    checkpointed with it (the resume is exact) and are left out of its parameters."""
    config = swin_flax.MODEL_PRESETS["swin_pico_n"].replace(embed_dim=48, num_classes=4)
    wide = swin_flax.SwinTransformer(config)
    teacher = (wide, swin_flax.init_params(wide, 1))
    weights = (0.0, 0.0, 1.0, 1.0)
    full = run_tiny_stage(tmp_path / "full", teacher=teacher, feature_weights=weights)
    partial = run_tiny_stage(
        tmp_path / "resumed", stop_after=6, teacher=teacher, feature_weights=weights
    )
    assert not partial.completed
    resumed = run_tiny_stage(tmp_path / "resumed", teacher=teacher, feature_weights=weights)
    assert_trees_equal(full.params, resumed.params)
    student = swin_flax.create_model("swin_pico_n", num_classes=4)
    assert set(full.params) == set(swin_flax.init_params(student, 0))  # no projections
    assert full.final_metrics["loss_features"] > 0
    plain = run_tiny_stage(tmp_path / "plain", teacher=teacher)
    assert "loss_features" not in plain.final_metrics
    with pytest.raises(AssertionError):
        assert_trees_equal(full.params, plain.params)  # the features changed the training


@pytest.mark.slow
def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    data = tiny_dataset()
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    with pytest.raises(Exception) as info:
        train_stage(
            name="nan",
            stage_dir=tmp_path,
            model=model,
            init_params=swin_flax.init_params(model, 0),
            train_data=data,
            optim_settings=OptimSettings(epochs=2, batch_size=8, peak_lr=1e30, warmup_epochs=0),
            loss_settings=LossSettings(joint="hard_only"),
            augment=AugmentConfig(out_size=32),
            loop_settings=LoopSettings(
                log_every_steps=1, checkpoint_every_steps=1, progress_bar=False
            ),
            seed=0,
        )
    assert type(info.value).__name__ == "TrainingDivergedError"
    assert "non-finite loss" in str(info.value) and "run the same command again" in str(info.value)
    checkpoints = sorted(
        int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert checkpoints, "the last good checkpoint must be kept"


@pytest.mark.slow
def test_a_stop_request_saves_the_step_just_run_and_the_resume_is_identical(tmp_path, monkeypatch):
    full = run_tiny_stage(tmp_path / "full")

    calls = iter(range(1, 100))
    monkeypatch.setattr(preemption, "stop_requested", lambda: next(calls) == 7)
    monkeypatch.setattr(preemption, "pending_signal", lambda: "SIGTERM")
    stopped = run_tiny_stage(tmp_path / "stopped")
    assert stopped.stopped_by == "SIGTERM" and stopped.steps == 7 and not stopped.completed
    # Checkpoints every 4 steps: 4 is periodic, 7 is the stop's own (nothing lost).
    assert checkpoint_steps(tmp_path / "stopped") == [4, 7]
    logged = [json.loads(l)["step"] for l in (tmp_path / "stopped" / "metrics.jsonl").open()]
    assert logged[-1] == 7  # flushed before the save

    monkeypatch.undo()
    resumed = run_tiny_stage(tmp_path / "stopped")
    assert resumed.completed and resumed.steps == 12
    assert_trees_equal(full.params, resumed.params)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "runs,stage",
    [("--config.runs=", "teacher"), ("--config.runs=exits", "exits")],
    ids=["teacher", "multi-exit"],
)
def test_kill_minus_nine_then_rerun_resumes_to_the_same_result(tmp_path, runs, stage):
    """A real SIGKILL in the middle of the demo's teacher stage (or of its multi-exit
    model, the teacher's shape with an exit), then the same command."""
    args = [
        "--config",
        "configs/demo.py:smoke",
        runs,
        "--config.finetune.epochs=1",
        "--config.finetune.warmup_epochs=0.5",
        "--config.loop.checkpoint_every_steps=5",
        "--config.eval.throughput_batch_size=0",
    ]
    if stage == "exits":
        args.append("--config.evaluate_teacher=False")
    clean = run_train_py(*args, "--workdir", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, "--workdir", str(killed_dir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    checkpoints = killed_dir / stage / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())
    ):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / stage / "stage_done.json").exists()

    resumed = run_train_py(*args, "--workdir", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, clean_params = swin_flax.load_checkpoint(tmp_path / "clean" / stage / "final_model")
    _, resumed_params = swin_flax.load_checkpoint(killed_dir / stage / "final_model")
    assert_trees_equal(clean_params, resumed_params)
    assert (
        json.loads((killed_dir / "results.json").read_text())[0]["top1"]
        == json.loads((tmp_path / "clean" / "results.json").read_text())[0]["top1"]
    )


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_trains(tmp_path):
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    with pytest.raises(UserInputError, match=r"stage 'big': batch_size 64 is larger than .*48"):
        train_stage(
            name="big",
            stage_dir=tmp_path,
            model=model,
            init_params=swin_flax.abstract_params(model),  # never used: refused first
            train_data=tiny_dataset(),  # 48 examples
            optim_settings=OptimSettings(epochs=1, batch_size=64, peak_lr=1e-3, warmup_epochs=0),
            loss_settings=LossSettings(joint="hard_only"),
            augment=AugmentConfig(out_size=32),
            loop_settings=LoopSettings(progress_bar=False),
            seed=0,
        )
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """48 32x32 PNGs of 4 classes (train and test), for resident-vs-streamed stages."""
    return tiny_image_folder(tmp_path_factory.mktemp("images"), n=48, side=32)


@pytest.mark.slow
def test_a_streamed_stage_equals_a_resident_one_and_its_resume_is_identical(tmp_path, photo_folder):
    resident = run_tiny_stage(tmp_path / "resident", data=load_image_folder(photo_folder, "train"))
    streamed = run_tiny_stage(tmp_path / "streamed", data=streamed_folder(photo_folder, workers=2))
    assert resident.completed and streamed.completed and streamed.steps == 12
    assert_trees_equal(resident.params, streamed.params)

    # Stopped after step 6 (the newest checkpoint is step 4), then resumed from there.
    partial = run_tiny_stage(tmp_path / "resumed", stop_after=6, data=streamed_folder(photo_folder))
    assert partial.steps == 6 and not partial.completed
    resumed = run_tiny_stage(tmp_path / "resumed", data=streamed_folder(photo_folder))
    assert resumed.completed and resumed.steps == 12
    assert_trees_equal(streamed.params, resumed.params)


def first_used_at(step_wanted: int, n=48, batch=8, seed=0) -> int:
    """An example first read at step `step_wanted` of run_tiny_stage's first epoch."""
    order = epoch_batches(n, batch, seed=seed, epoch=0)
    seen = set(order[:step_wanted].ravel())
    return int(next(i for i in order[step_wanted] if i not in seen))


@pytest.mark.slow
def test_a_file_unreadable_mid_run_saves_the_steps_before_it_and_the_fix_resumes(
    tmp_path, photo_folder
):
    full = run_tiny_stage(tmp_path / "full", data=streamed_folder(photo_folder))
    data = streamed_folder(photo_folder)
    victim = data.source.listing.files[first_used_at(5)]
    content = victim.read_bytes()
    victim.write_bytes(b"")  # becomes unreadable after the run has listed it
    try:
        with pytest.raises(UserInputError) as info:
            run_tiny_stage(tmp_path / "run", data=data)
    finally:
        victim.write_bytes(content)
    message = str(info.value)
    assert "\n" not in message
    assert f"the batch of step 6 could not be read: {victim}: not a readable image" in message
    assert "the 5 steps before it are saved" in message and "run the same command again" in message
    assert checkpoint_steps(tmp_path / "run") == [4, 5]  # periodic 4, then the failure's 5
    resumed = run_tiny_stage(tmp_path / "run", data=streamed_folder(photo_folder))
    assert resumed.completed
    assert_trees_equal(full.params, resumed.params)


@pytest.mark.slow
def test_a_decoding_thread_that_fails_is_one_error_and_loses_nothing(
    tmp_path, photo_folder, monkeypatch
):
    read = sources.ImageFolderSource.read
    poisoned = first_used_at(3)

    def failing(self, index):
        if index == poisoned:
            raise RuntimeError("worker died")
        return read(self, index)

    monkeypatch.setattr(sources.ImageFolderSource, "read", failing)
    with pytest.raises(
        DataLoaderError,
        match=r"step 4 could not be read: the data loader failed "
        r"\(RuntimeError: worker died\); the 3 steps before it are saved",
    ):
        run_tiny_stage(tmp_path, data=streamed_folder(photo_folder, workers=2))
    assert checkpoint_steps(tmp_path) == [3]
    assert not [t for t in threading.enumerate() if t.name.startswith("grain")]


def test_a_stage_resumed_on_changed_data_says_so_once(tmp_path, capsys):
    data = tiny_dataset()
    check_data_unchanged(tmp_path, "tiny", data, start_step=0)
    check_data_unchanged(tmp_path, "tiny", data, start_step=4)  # the same data: silent
    assert capsys.readouterr().err == ""
    changed = data.take(np.arange(40))
    check_data_unchanged(tmp_path, "tiny", changed, start_step=4)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("note: the training data of stage 'tiny' changed since it started")
    assert "(48 examples then, 40 now): it resumes at step 4" in line
    check_data_unchanged(tmp_path, "tiny", changed, start_step=6)
    assert capsys.readouterr().err == ""  # said once: the new fingerprint is kept
