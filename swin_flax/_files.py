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

The target's directory must exist (a missing one is an OSError naming it). A leaf: imports
nothing of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


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
    try:
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
