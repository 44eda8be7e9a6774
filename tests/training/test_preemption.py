"""Stopping cleanly on SIGTERM / SIGINT (`swin_flax.training.preemption`): the first signal
only requests a stop, the stage saves at the step it was on and exits 75 with the command
that resumes (streamed data too, its decoding threads gone); two jax.distributed processes
agree on the step; while the data is still being decoded, there is nothing to save and the
run stops at once."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import swin_flax
from swin_flax import cli
from swin_flax.training import preemption
from tests.helpers import (
    REPO,
    TEACHER_ONLY,
    assert_trees_equal,
    checkpoint_steps,
    finish,
    run_train_py,
    start_processes,
    start_train_py,
    tiny_image_folder,
)

TEACHER_STEPS = 2 * (1347 // 64)  # digits train split / batch size, two epochs


def wait_for_training(stage_dir: Path, proc, timeout=300) -> None:
    """Until the stage has logged a step (training is under way)."""
    metrics = stage_dir / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"training never started: {proc.poll()} {proc.stderr.read()[-2000:]}")


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


@pytest.mark.multiprocess
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


@pytest.mark.slow
@pytest.mark.multiprocess
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


@pytest.mark.slow
@pytest.mark.multiprocess
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


def test_a_signal_inside_the_block_is_a_stop_request_and_the_handlers_come_back(monkeypatch):
    # The flag outlives the block (the pipeline reads it between stages): reset it after
    # this test, or every later training stage in this process would stop at its first step.
    monkeypatch.setitem(preemption._state, "signal", None)
    before = signal.getsignal(signal.SIGTERM)
    assert not preemption.stop_requested() and preemption.pending_signal() is None
    with preemption.handle_stop_signals():
        os.kill(os.getpid(), signal.SIGTERM)  # would end pytest without the handler
        deadline = time.monotonic() + 10
        while not preemption.stop_requested() and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in the main thread at the next bytecode
        assert preemption.stop_requested() and preemption.pending_signal() == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


DECODING_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from configs import demo
from swin_flax import cli
from swin_flax.data import image_folder
from swin_flax.pipeline.run import run_pipeline
from swin_flax.training import preemption

decode, log = image_folder.decode_image, open(sys.argv[3], "a", buffering=1)


def slow_decode(path, size=None):  # 300 files, 20 ms each: about 3 s of decoding
    log.write("x\n")
    time.sleep(0.02)
    return decode(path, size)


image_folder.decode_image = slow_decode
config = demo.get_config("smoke")
config.runs, config.data.source, config.data.root = "", "image_folder", sys.argv[2]
config.data.placement, config.data.workers = "device", 2


def main():
    with preemption.handle_stop_signals():
        run_pipeline(config, sys.argv[4])


sys.exit(cli.run(main, resume_hint=lambda: "resume with: the same command"))
"""


@pytest.mark.multiprocess
def test_ctrl_c_while_the_data_is_decoded_stops_at_once_with_nothing_to_lose(tmp_path):
    """The whole-split decoding of a resident run: the first SIGINT ends it within a few
    images (not after the split), exit 75, and no word of a step that does not exist."""
    root = tiny_image_folder(tmp_path / "images", n=150, splits=("train", "test"))
    decoded = tmp_path / "decoded.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DECODING_SCRIPT,
            str(REPO),
            str(root),
            str(decoded),
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if decoded.exists() and len(decoded.read_text().split()) >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == cli.PREEMPTED_EXIT_CODE, stderr[-2000:]
    assert "SIGINT received while reading the data: stopping now" in stderr
    assert "stopped by SIGINT while reading the data; nothing to save, nothing lost" in stderr
    assert "finishing the current step" not in stderr and "Traceback" not in stderr
    assert len(decoded.read_text().split()) < 100  # of 300: it did not decode on
    assert not (tmp_path / "work" / "teacher").exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigint_while_a_stream_decodes_saves_exits_75_and_leaves_no_process(tmp_path):
    root = tiny_image_folder(tmp_path / "images", n=128, side=32)
    args = [
        *TEACHER_ONLY,
        "--config.data.source=image_folder",
        f"--config.data.root={root}",
        "--config.data.placement=stream",
        "--config.data.workers=2",
        "--config.finetune.batch_size=8",
    ]
    workdir = tmp_path / "run"
    proc = start_train_py(*args, "--workdir", str(workdir))
    wait_for_training(workdir / "teacher", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == cli.PREEMPTED_EXIT_CODE, stderr[-2000:]
    assert "SIGINT received: finishing the current step" in stderr
    stopped_at = int(stderr.split("after step ")[1].split(";")[0])
    assert stopped_at in checkpoint_steps(workdir / "teacher")
    assert _processes_naming(workdir) == []  # no decoding worker outlives the run

    resumed = run_train_py(*args, "--workdir", str(workdir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in (workdir / "teacher" / "metrics.jsonl").open()]
    assert steps == list(range(1, 2 * 128 // 8 + 1))  # every step logged once


def _processes_naming(text) -> list[int]:
    """Live processes whose command line mentions `text` (here: the run's workdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(text) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found
