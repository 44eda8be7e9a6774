"""Atomic file writes: a reader sees a file's old content or its new one, never half of it.

A kill, a full disk or a power cut during a write must not leave a truncated
stage_config.json, results.json, teacher-logit block or exported model behind. Every
writer here writes a temporary file beside the target (a rename is atomic only within one
file system), flushes and fsyncs it, and renames it over the target:

    write_text(path, text)
    write_json(path, value)
    write_bytes(path, data)
    with replacing(path) as temporary:   # for writers that want a path: np.save, onnx.save
        np.save(temporary, values)

The target's directory must exist (a missing one is an OSError naming it). A full disk is
one `DiskFullError` naming the file system, the file, what is kept and what to do; the
other writers of a run (orbax checkpoints, metrics, the teacher-logit cache) raise it too,
through `stop_when_disk_full`. A leaf: imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path


class DiskFullError(OSError):
    """A write that found no space left on its file system. Entry points print its message
    as one `error:` line and exit with code 2, not the requeue code 75: a requeued job would
    find the same full disk, so a person has to free space first."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How libraries that wrap the OS error report it: tensorstore (orbax's writer) as
# "... No space left on device [os_error_code='28']", safetensors as "(os error 28)".
_NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "os_error_code='28'")


def is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, says the disk (or the quota) is full."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in _NO_SPACE_ERRNOS:
            return True
        if any(text in str(err) for text in _NO_SPACE_TEXTS):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def file_system_of(path: str | os.PathLike) -> Path:
    """The mount point of the file system that holds `path` (or would hold it)."""
    path = Path(os.path.abspath(os.fspath(path)))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_error(path: str | os.PathLike, doing: str, kept: str) -> DiskFullError:
    """'no space left on MOUNT while DOING; KEPT; free space and rerun'."""
    return DiskFullError(
        f"no space left on {file_system_of(path)} while {doing}; {kept}; free space and rerun"
    )


@contextlib.contextmanager
def stop_when_disk_full(path: str | os.PathLike, doing: str, kept: str) -> Iterator[None]:
    """Turn a full disk inside the block (whatever library reports it, however deep) into
    one `disk_full_error(path, doing, kept)`; other errors pass unchanged."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(path, doing, kept) from None


def ignore_closed_event_loops() -> None:
    """Drop Python's reports of an ignored 'Event loop is closed'.

    When an orbax save fails (a full disk), tensorstore's writes still in flight finish
    later into the event loop orbax has closed meanwhile; Python prints each as an ignored
    exception, a hundred tracebacks for one full disk, that say nothing the error raised
    from the save does not.
    """
    previous = sys.unraisablehook
    if getattr(previous, "ignores_closed_event_loops", False):
        return

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook.ignores_closed_event_loops = True
    sys.unraisablehook = hook


def quiet_failed_restore_reports(path: str | os.PathLike) -> None:
    """Keep off the terminal what a failed orbax restore of `path` prints besides the one
    error raised from it: tensorstore's reads still in flight finish into the event loop
    orbax has closed (ignored 'Event loop is closed' errors), and asyncio reports each
    failed read whose exception nobody retrieved ('Future exception was never retrieved'),
    at times we do not control. Reports that do not name `path` still get through."""
    target = logging.getLogger("asyncio")
    records = next((f for f in target.filters if isinstance(f, _UnreadableRecords)), None)
    if records is None:
        records = _UnreadableRecords()
        target.addFilter(records)
    records.paths.add(os.fspath(path))
    ignore_closed_event_loops()


class _UnreadableRecords(logging.Filter):
    """Drops asyncio's 'exception was never retrieved' records about the files of
    checkpoints already reported damaged (`paths`)."""

    def __init__(self):
        super().__init__()
        self.paths: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "exception was never retrieved" not in text:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not any(path in text for path in self.paths)


class _DiskFullRecords(logging.Filter):
    """Drops log records about a full disk. orbax logs each failure of its background
    save threads with the whole traceback, four times for one full disk, and asyncio each
    of its write tasks that failed, at exit; the one `DiskFullError` raised from the save
    says it in a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_disk_full(record.exc_info[1]):
            return False
        return not any(text in record.getMessage() for text in _NO_SPACE_TEXTS)


def quiet_failed_save_reports(loggers: tuple[str, ...] = ("absl", "asyncio")) -> None:
    """Keep off the terminal what a failed orbax save prints besides its exception: the
    full-disk reports orbax (through absl's logger) and asyncio log, and the ignored
    'Event loop is closed' errors of its writes still in flight."""
    for name in loggers:
        target = logging.getLogger(name)
        if not any(isinstance(f, _DiskFullRecords) for f in target.filters):
            target.addFilter(_DiskFullRecords())
    ignore_closed_event_loops()


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, the file written
    there replaces `path` (flushed to disk first). When the block raises, the temporary
    file is removed and `path` keeps its old content (or stays absent).

    The temporary name keeps `path`'s suffix (np.save appends '.npy' to any other name)
    and starts with a dot, so that listings of finished files (`*.json`) skip it; it is
    unique, so that two processes writing the same file never share one temporary.
    """
    path = Path(os.fspath(path))
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    kept = "its previous content is kept" if path.exists() else "nothing of it was written"
    try:
        with stop_when_disk_full(path, f"writing {path}", kept):
            yield temporary
            _fsync_file(temporary)
            os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return `path`."""
    with replacing(path) as temporary:
        temporary.write_bytes(data)
    return Path(os.fspath(path))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return `path`."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value, *, indent: int | None = 2) -> Path:
    """Write `value` as JSON (no trailing newline) to `path` atomically; return `path`."""
    return write_text(path, json.dumps(value, indent=indent))


def _fsync_file(path: Path) -> None:
    """Force the file's data to disk: without it a crash soon after the rename can leave
    the new name pointing at an empty file (ext4 and XFS commit metadata first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable, where the platform can: Windows cannot open a
    directory, and some network file systems refuse to fsync one. The file is in place
    by then, so a refusal is no error."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
