"""Train-state checkpoints of a stage (`swin_flax.training.checkpoints`): saved and
restored exactly; a damaged newest one is set aside and the older one resumes; when none
restores, one clear error and nothing moved; saves a kill left unfinished are cleaned up."""

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from swin_flax._files import DiskFullError
from swin_flax.errors import CheckpointRestoreError
from swin_flax.training import checkpoints
from tests.helpers import REPO, assert_trees_equal, checkpoint_steps, free_port, run_tiny_stage
from tests.test_files import small_disk


def truncate_largest_file(step_dir: Path) -> None:
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def delete_metadata(step_dir: Path) -> None:
    found = [p for p in step_dir.rglob("_METADATA")]
    assert found
    for path in found:
        path.unlink()


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_saved_state_restores_exactly_and_the_newest_step_wins(tmp_path):
    state = {"step": jnp.asarray(3, jnp.int32), "w": jnp.arange(6.0).reshape(2, 3)}
    saver = checkpoints.TrainCheckpointer(tmp_path / "checkpoints", keep=2)
    for step in (3, 6, 9):
        saver.save(step, {**state, "step": jnp.asarray(step, jnp.int32)})
    saver.close()
    assert checkpoint_steps(tmp_path) == [6, 9]  # keep=2: the oldest is deleted

    reader = checkpoints.TrainCheckpointer(tmp_path / "checkpoints")
    template = {"step": jnp.zeros((), jnp.int32), "w": jnp.zeros((2, 3))}
    restored = reader.restore_newest_intact(template)
    assert reader.latest_step() == 9 and int(restored["step"]) == 9
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))
    assert int(reader.restore(template, step=6)["step"]) == 6
    reader.close()


def test_an_empty_directory_restores_nothing(tmp_path):
    reader = checkpoints.TrainCheckpointer(tmp_path / "checkpoints")
    assert reader.restore_newest_intact({"w": jnp.zeros(2)}) is None
    assert reader.latest_step() is None
    reader.close()


def test_unfinished_saves_are_removed_and_finished_steps_kept(tmp_path):
    (tmp_path / "4").mkdir()
    unfinished = tmp_path / f"8{checkpoints.TMP_MARKER}-1700000000"
    (unfinished / "state").mkdir(parents=True)
    assert checkpoints.remove_unfinished_saves(tmp_path) == [unfinished]
    assert [p.name for p in tmp_path.iterdir()] == ["4"]
    assert checkpoints.remove_unfinished_saves(tmp_path / "absent") == []


def test_a_second_damaged_copy_of_a_step_gets_a_new_name(tmp_path):
    assert checkpoints._free_name(tmp_path / "8") == tmp_path / "8"
    (tmp_path / "8").mkdir()
    (tmp_path / "8.1").mkdir()
    assert checkpoints._free_name(tmp_path / "8") == tmp_path / "8.2"


def test_the_first_line_of_an_error_names_its_type():
    err = ValueError("\n  bad checksum in _METADATA  \nmore detail")
    assert checkpoints._first_line(err) == "ValueError: bad checksum in _METADATA"
    assert checkpoints._first_line(KeyError()) == "KeyError: "


# --- a full disk during a save: one DiskFullError, the partial save removed


def test_a_save_that_fills_the_disk_is_one_error_naming_the_step_kept(tmp_path):
    with small_disk(tmp_path) as disk:
        saver = checkpoints.TrainCheckpointer(disk / "checkpoints")
        noise = np.random.default_rng(0).standard_normal(500_000).astype(np.float32)  # no zstd
        saver.save(4, {"w": jnp.asarray(noise[:10_000])})  # 40 kB: fits
        with pytest.raises(DiskFullError) as caught:
            saver.save(8, {"w": jnp.asarray(noise)})  # 2 MB on a 1 MB disk
            saver.close()  # an asynchronous save reports its failure when it is waited for
        saver.close()  # once failed, closing adds no second error
        assert str(caught.value) == (
            f"no space left on {disk} while saving step 8 to {disk / 'checkpoints'}; "
            "the checkpoint of step 4 is kept; free space and rerun"
        )
        assert [p.name for p in (disk / "checkpoints").iterdir()] == ["4"]  # no partial save
        reader = checkpoints.TrainCheckpointer(disk / "checkpoints")
        restored = reader.restore_newest_intact({"w": jnp.zeros(10_000)})
        np.testing.assert_array_equal(np.asarray(restored["w"]), noise[:10_000])
        reader.close()


def fill_the_disk_at(monkeypatch, failing_step: int):
    """orbax's saves of `failing_step` fail as tensorstore reports a full disk, after
    leaving a partial save behind (what a real full disk does)."""
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def save(manager, step, *args, **kwargs):
        if step != failing_step:
            return real_save(manager, step, *args, **kwargs)
        (Path(manager.directory) / f"{step}{checkpoints.TMP_MARKER}-1").mkdir()
        raise ValueError(
            'RESOURCE_EXHAUSTED: Error writing "opt_state/0" in OCDBT database: Failed to '
            "write 3305472 bytes to file 15: No space left on device [os_error_code='28']"
        )

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)


def test_a_full_disk_with_no_earlier_checkpoint_says_so(tmp_path, monkeypatch):
    fill_the_disk_at(monkeypatch, 4)
    saver = checkpoints.TrainCheckpointer(tmp_path / "checkpoints")
    with pytest.raises(DiskFullError, match="saving step 4 to .*; no earlier checkpoint of this"):
        saver.save(4, {"w": jnp.zeros(3)})
    saver.close()
    assert list((tmp_path / "checkpoints").iterdir()) == []


@pytest.mark.slow
def test_a_stage_whose_checkpoint_fills_the_disk_stops_with_that_error_alone(tmp_path, monkeypatch):
    fill_the_disk_at(monkeypatch, 8)
    stage = tmp_path / "stage"
    with pytest.raises(DiskFullError) as caught:
        run_tiny_stage(stage)
    assert "while saving step 8 to" in str(caught.value)
    assert "the checkpoint of step 4 is kept; free space and rerun" in str(caught.value)
    assert checkpoint_steps(stage) == [4]
    assert [p.name for p in (stage / "checkpoints").iterdir()] == ["4"]


# Two jax.distributed processes: a stage ran 20 steps (20 preemption sync-point ids), the next
# stage saves its step 1, and right after the save one process gets SIGTERM, the notice.
NOTICE_AFTER_A_SAVE = r"""
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[2], num_processes=2, process_id=int(sys.argv[3]))
import numpy as np
from jax.experimental import multihost_utils
from swin_flax.training import distributed, preemption
from swin_flax.training.checkpoints import TrainCheckpointer

with preemption.handle_stop_signals():
    for _ in range(20):  # an earlier stage
        assert not preemption.stop_requested()
    state = distributed.put_replicated({"w": np.ones(3, np.float32)}, distributed.make_mesh())
    checkpointer = TrainCheckpointer(sys.argv[4], keep=2)
    checkpointer.save(1, state)
    checkpointer.manager.wait_until_finished()
    multihost_utils.sync_global_devices("saved")
    if jax.process_index() == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(3)  # the processes agree on the stop meanwhile
    for call in range(1, 101):
        if preemption.stop_requested():
            print(f"stopped at call {call} after the notice", flush=True)
            break
        time.sleep(0.1)
    else:
        print("the stop was missed", flush=True)
    checkpointer.close()
"""


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_preemption_notice_right_after_a_save_stops_every_process(tmp_path):
    """orbax's save reported the stage's step as a preemption sync-point id, below the ids
    of training/preemption.py's count: the agreed stop was an id already passed, and no
    process ever stopped. Now the count is the only id: both stop, at the same call."""
    address = f"localhost:{free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", NOTICE_AFTER_A_SAVE, str(REPO), address, str(i), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
        assert "the stop was missed" not in stdout
    stops = {stdout.strip().splitlines()[-1] for stdout, _ in outputs}
    assert len(stops) == 1 and stops.pop().startswith("stopped at call ")
