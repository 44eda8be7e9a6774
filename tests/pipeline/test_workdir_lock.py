"""One run per work directory (`swin_flax.pipeline.workdir_lock`): a second run is refused
at once, naming the holder, and the lock dies with its holder, even on kill -9."""

import os
import socket
import subprocess
import sys
import time

import pytest

from swin_flax.errors import WorkdirInUseError
from swin_flax.pipeline.workdir_lock import LOCK_FILE, exclusive_workdir
from tests.helpers import REPO, TEACHER_ONLY, run_train_py


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
