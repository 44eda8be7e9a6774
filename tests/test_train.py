"""train.py itself (its flags and errors are tests/test_cli.py's): the lines it ends with."""

import pytest

from tests.helpers import TEACHER_ONLY, run_train_py


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_run_stopped_before_any_evaluation_names_no_results_file(tmp_path):
    result = run_train_py(
        *TEACHER_ONLY, "--config.loop.stop_after_steps=1", f"--workdir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "stage length: fine-tune teacher: 42 steps (2 epochs of 21)"
    assert lines[1].startswith("stopped early: teacher at step 1; run the same command again")
    assert lines[-1] == "results: none (no model was evaluated in this run)"
    assert "results.json" not in result.stdout and not (tmp_path / "results.json").exists()
    assert "||" not in result.stdout  # no empty table either


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_checkpoint_save_that_fills_a_real_disk_ends_in_one_line(tmp_path):
    from tests.test_files import small_disk

    # One checkpoint of the teacher (parameters and optimizer state) takes about 28 MB of
    # the 30 MB disk: step 10's save fits, step 20's does not (the issue's own setup).
    with small_disk(tmp_path, size="30m") as disk:
        result = run_train_py(*TEACHER_ONLY, f"--workdir={disk / 'w'}")
        checkpoints = disk / "w" / "teacher" / "checkpoints"
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.splitlines() == [
            f"error: no space left on {disk} while saving step 20 to {checkpoints}; the "
            "checkpoint of step 10 is kept; free space and rerun"
        ]
        assert sorted(p.name for p in checkpoints.iterdir()) == ["10"]  # no partial save
