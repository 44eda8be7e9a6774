"""One run per work directory: an OS-level exclusive lock on WORKDIR/.lock.

Two runs writing one workdir interleave checkpoints and truncate each other's metrics.
`fcntl.flock` is released by the kernel when the holder exits, however it exits (kill -9
included), so a crashed run never blocks the next one and there is no stale lock to
delete by hand. The file's content (pid and host of the holder) is only for the message.
Only process 0 locks: the processes of one multi-host run share the workdir by design.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from swin_flax.errors import WorkdirInUseError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive_workdir(workdir: str | Path, *, enabled: bool = True):
    """Hold WORKDIR/.lock for the duration of the block, or raise WorkdirInUseError at once."""
    if not enabled:
        yield
        return
    path = Path(workdir) / LOCK_FILE
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().split() or ["?", "?"]
            pid, host = (holder + ["?"])[:2]
            raise WorkdirInUseError(
                f"workdir {workdir} is in use by pid {pid} on host {host}; wait for that run "
                "to finish (or stop it), or use another --workdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock
