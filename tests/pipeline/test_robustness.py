"""Real-world faults: preemption, two runs on one workdir, damaged checkpoints and files,
late-found config mistakes, several processes (issue 8)."""

import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import swin_flax
from configs import demo
from swin_flax import cli
from swin_flax.errors import CheckpointRestoreError, UserInputError
from swin_flax.pipeline import preflight
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.workdir_lock import WorkdirInUseError, exclusive_workdir
from swin_flax.training import checkpoints, preemption
from tests.pipeline.test_run import (
    REPO,
    assert_trees_equal,
    run_tiny_stage,
    run_train_py,
    smoke_config,
)

# The demo's smoke config, teacher only, with a log line every step so a test can tell
# that training is under way; identical numerics to any other logging interval.
TEACHER_ONLY = [
    "--config",
    "configs/demo.py:smoke",
    "--config.runs=",
    "--config.finetune.epochs=2",
    "--config.finetune.warmup_epochs=0.5",
    "--config.loop.log_every_steps=1",
    "--config.loop.checkpoint_every_steps=10",
    "--config.eval.throughput_batch_size=0",
]
TEACHER_STEPS = 2 * (1347 // 64)  # digits train split / batch size, two epochs


def checkpoint_steps(stage_dir: Path) -> list[int]:
    directory = stage_dir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def start_train_py(*args, env=None):
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or dict(os.environ, JAX_PLATFORMS="cpu"),
    )


def wait_for_training(stage_dir: Path, proc, timeout=300) -> None:
    """Until the stage has logged a step (training is under way)."""
    metrics = stage_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"training never started: {proc.poll()} {proc.stderr.read()[-2000:]}")


# --- one run per workdir -------------------------------------------------------------------


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


def test_the_lock_dies_with_its_holder_even_on_kill_minus_nine(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]);"
            "from swin_flax.pipeline.workdir_lock import exclusive_workdir as lock\n"
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


# --- preemption ----------------------------------------------------------------------------

SIGNAL_SCRIPT = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from swin_flax.training import preemption
with preemption.handle_stop_signals():
    os.kill(os.getpid(), signal.SIGTERM)
    print("after SIGTERM:", preemption.stop_requested(), preemption.pending_signal(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # schedulers may repeat it: still a clean stop
    print("after a second SIGTERM:", preemption.pending_signal(), flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # a person insisting: abort
    print("not reached", flush=True)
"""


def test_first_signal_only_requests_a_stop_and_a_second_sigint_aborts_at_once():
    out = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT, str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "after SIGTERM: True SIGTERM" in out.stdout  # the process survived the SIGTERM
    assert "after a second SIGTERM: SIGTERM" in out.stdout
    assert "not reached" not in out.stdout
    assert out.returncode == 128 + signal.SIGINT
    assert "aborting now" in out.stderr


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


def test_sigterm_mid_stage_saves_exits_75_and_the_printed_command_resumes(tmp_path):
    clean = run_train_py(*TEACHER_ONLY, "--workdir", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-2000:]

    workdir = tmp_path / "preempted"
    proc = start_train_py(*TEACHER_ONLY, "--workdir", str(workdir))
    wait_for_training(workdir / "teacher", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == cli.PREEMPTED_EXIT_CODE, stderr[-2000:]
    assert "SIGTERM received: finishing the current step" in stderr
    assert "teacher stopped by SIGTERM after step" in stderr
    stopped_at = int(stderr.split("after step ")[1].split(";")[0])
    assert 0 < stopped_at < TEACHER_STEPS
    assert stopped_at in checkpoint_steps(workdir / "teacher")  # saved at the stop itself
    assert not list((workdir / "teacher" / "checkpoints").glob("*tmp*"))
    assert not (workdir / "teacher" / "stage_done.json").exists()

    command = shlex.split(stderr.split("resume with: ")[1].strip().splitlines()[0])
    assert command[0] == "python" and f"--workdir={workdir}" in command
    resumed = subprocess.run(
        [sys.executable, *command[1:]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, clean_params = swin_flax.load_checkpoint(tmp_path / "clean" / "teacher" / "final_model")
    _, resumed_params = swin_flax.load_checkpoint(workdir / "teacher" / "final_model")
    assert_trees_equal(clean_params, resumed_params)
    steps = [json.loads(l)["step"] for l in (workdir / "teacher" / "metrics.jsonl").open()]
    assert steps == list(range(1, TEACHER_STEPS + 1))  # every step logged exactly once


# --- damaged checkpoints ---------------------------------------------------------------------


def truncate_largest_file(step_dir: Path) -> None:
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def delete_metadata(step_dir: Path) -> None:
    found = [p for p in step_dir.rglob("_METADATA")]
    assert found
    for path in found:
        path.unlink()


@pytest.mark.parametrize("damage", [truncate_largest_file, delete_metadata])
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_older_one_resumes_identically(
    tmp_path, capsys, damage
):
    full = run_tiny_stage(tmp_path / "full")
    stage = tmp_path / "damaged"
    run_tiny_stage(stage, stop_after=10)
    assert checkpoint_steps(stage) == [4, 8]
    damage(stage / "checkpoints" / "8")
    leftover = stage / "checkpoints" / "12.orbax-checkpoint-tmp-1700000000"
    (leftover / "state").mkdir(parents=True)  # what a kill during a save leaves

    resumed = run_tiny_stage(stage)
    assert resumed.completed and resumed.steps == 12
    assert_trees_equal(full.params, resumed.params)  # replayed from step 4, bit for bit
    err = capsys.readouterr().err
    assert f"checkpoint {stage / 'checkpoints' / '8'} does not restore" in err
    assert (stage / checkpoints.DAMAGED_DIR / "8").is_dir()  # kept, not deleted
    assert not leftover.exists()


def test_when_no_checkpoint_restores_one_clear_error_and_nothing_is_moved(tmp_path):
    stage = tmp_path / "stage"
    run_tiny_stage(stage, stop_after=10)
    for step in (4, 8):
        delete_metadata(stage / "checkpoints" / str(step))
    with pytest.raises(
        CheckpointRestoreError,
        match=r"no checkpoint in .* restores \(step 8: .*; step 4: .*delete that "
        "stage directory",
    ):
        run_tiny_stage(stage)
    assert checkpoint_steps(stage) == [4, 8] and not (stage / checkpoints.DAMAGED_DIR).exists()


# --- mistakes caught before anything trains --------------------------------------------------


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
            "deeper than its teacher.*student.cut_points=\\(p1, p2\\)",
        ),
    ],
)
def test_late_mistakes_are_reported_before_any_data_loads(tmp_path, change, message):
    config = smoke_config()  # tfds cifar100: loading it here would fail differently
    change(config)
    with pytest.raises(UserInputError, match=message):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()


def test_several_bad_values_are_reported_together():
    from swin_flax.pipeline.preflight import load_settings

    config = smoke_config()
    config.distill.peak_lr = math.nan
    config.finetune.weight_decay = -1.0
    with pytest.raises(UserInputError) as info:
        load_settings(config)
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


def test_a_damaged_stage_config_names_the_file(tmp_path):
    from swin_flax.pipeline.stages import check_stage_config

    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "stage_config.json").write_text("{garbage")
    with pytest.raises(UserInputError, match=r"stage_config.json is damaged .*delete the stage"):
        check_stage_config(tmp_path, {"seed": 0})


def test_an_unwritable_workdir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # root ignores permission bits, so block with a file instead
    with pytest.raises(UserInputError, match=r"cannot write to the workdir .*a_file/run"):
        run_pipeline(smoke_config(), blocker / "run")


def test_a_data_set_too_large_for_the_device_is_reported_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "device_memory_bytes", lambda: (4 * 2**20, "test memory"))
    config = demo.get_config("smoke")
    with pytest.raises(
        UserInputError,
        match=r"more than 50% of the 0.00 GiB of test memory; "
        r"store the images smaller with data.stored_size",
    ):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()


def test_a_finished_stage_without_final_model_is_rebuilt_from_its_checkpoint(tmp_path):
    import shutil

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


# --- several processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# Six steps per stage, like the 4-vs-1-device test, so its tolerance applies: float sums in
# another order differ by ~1e-7 per step and Adam's normalisation lets that grow with steps.
MULTIHOST = TEACHER_ONLY[:2] + [
    "--config.runs=transfer+kd",
    "--config.finetune.epochs=0.3",
    "--config.distill.epochs=0.3",
    "--config.finetune.warmup_epochs=0.1",
    "--config.distill.warmup_epochs=0.1",
    "--config.loop.log_every_steps=1",
    "--config.loop.checkpoint_every_steps=100",
    "--config.eval.throughput_batch_size=0",
]


def start_processes(workdir: Path, count: int, devices_each: int, args=MULTIHOST):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={devices_each}",
    )
    if count == 1:
        return [start_train_py(*args, "--workdir", str(workdir), env=env)]
    address = f"localhost:{free_port()}"
    return [
        start_train_py(
            *args,
            "--workdir",
            str(workdir),
            "--multihost",
            f"--coordinator_address={address}",
            f"--num_processes={count}",
            f"--process_id={i}",
            env=env,
        )
        for i in range(count)
    ]


def finish(procs, timeout=600) -> list[tuple[int, str]]:
    stderrs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, stderr) for p, stderr in zip(procs, stderrs)]


def max_param_diff(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path):
    outcomes = finish(
        start_processes(tmp_path / "one", 1, 4) + start_processes(tmp_path / "two", 2, 2)
    )
    for code, stderr in outcomes:
        assert code == 0, stderr[-3000:]
    for stage in ("teacher", "student_transfer_kd"):
        _, one = swin_flax.load_checkpoint(tmp_path / "one" / stage / "final_model")
        _, two = swin_flax.load_checkpoint(tmp_path / "two" / stage / "final_model")
        assert max_param_diff(one, two) < 1e-5  # the tolerance of the 4-vs-1 device test
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert [r["top1"] for r in one] == [r["top1"] for r in two]


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_the_rerun_finishes(tmp_path):
    workdir = tmp_path / "run"
    procs = start_processes(workdir, 2, 2)
    wait_for_training(workdir / "teacher", procs[0])
    procs[1].send_signal(signal.SIGTERM)
    outcomes = finish(procs)
    for code, stderr in outcomes:
        assert code == cli.PREEMPTED_EXIT_CODE, stderr[-3000:]
    steps = {stderr.split("after step ")[1].split(";")[0] for _, stderr in outcomes}
    assert len(steps) == 1  # both agreed on the step
    assert int(steps.pop()) in checkpoint_steps(workdir / "teacher")

    for code, stderr in finish(start_processes(workdir, 2, 2)):
        assert code == 0, stderr[-3000:]
    rows = json.loads((workdir / "results.json").read_text())
    assert [r["model"] for r in rows] == ["swin_micro (teacher)", "swin_micro_n"]


# --- bad files in an image folder, end to end --------------------------------------------------


def image_folder_with_bad_files(root: Path) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(8 if split == "train" else 4):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                pixels[..., 0] = 200 * label
                Image.fromarray(pixels).save(folder / f"{i}.png")
    truncated = root / "train" / "cat" / "cut.jpg"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty = root / "test" / "dog" / "empty.jpg"
    empty.write_bytes(b"")
    return [truncated, empty]


def image_folder_args(root: Path) -> list[str]:
    return [
        "--config",
        "configs/demo.py:smoke",
        "--config.runs=",
        "--config.data.source=image_folder",
        f"--config.data.root={root}",
        "--config.finetune.batch_size=4",
        "--config.distill.batch_size=4",
        "--config.eval.batch_size=8",
    ]


def test_bad_images_stop_the_run_with_one_list_and_can_be_skipped(tmp_path):
    bad = image_folder_with_bad_files(tmp_path / "images")
    failed = run_train_py(*image_folder_args(tmp_path / "images"), "--workdir", str(tmp_path / "a"))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert str(bad[0]) in failed.stderr and str(bad[1]) in failed.stderr  # both splits at once
    assert "data.skip_bad_images=True" in failed.stderr
    assert not (tmp_path / "a" / "teacher").exists()

    config = demo.get_config("smoke")
    config.runs = ""
    config.data.source, config.data.root = "image_folder", str(tmp_path / "images")
    config.data.skip_bad_images = True
    config.finetune.batch_size = config.distill.batch_size = 4
    config.eval.batch_size, config.eval.throughput_batch_size = 8, 0
    with pytest.warns(UserWarning, match="cut.jpg"):
        rows = run_pipeline(config, tmp_path / "b")
    assert rows[0]["skipped_images"] == 2
    listed = (tmp_path / "b" / "skipped_images.txt").read_text().split()
    assert sorted(listed) == sorted(str(p) for p in bad)
