"""swin_flax._files: atomic writes. The target holds its old content or its new one, never a
part; nothing is left beside it; the data is on disk before the rename."""

import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from swin_flax import _files


def test_write_text_json_and_bytes_write_exactly_that_and_leave_nothing_beside(tmp_path):
    assert _files.write_text(tmp_path / "a.md", "| x |\nü\n") == tmp_path / "a.md"
    assert (tmp_path / "a.md").read_text(encoding="utf-8") == "| x |\nü\n"
    _files.write_json(tmp_path / "b.json", {"steps": 8, "metrics": [1.5, None]})
    assert (
        tmp_path / "b.json"
    ).read_text() == '{\n  "steps": 8,\n  "metrics": [\n    1.5,\n    null\n  ]\n}'
    _files.write_json(tmp_path / "c.json", [1, 2], indent=None)
    assert (tmp_path / "c.json").read_text() == "[1, 2]"
    _files.write_bytes(tmp_path / "d.bin", b"\x00\xff")
    assert (tmp_path / "d.bin").read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.json", "c.json", "d.bin"]


def test_a_rewrite_replaces_the_old_content(tmp_path):
    path = tmp_path / "stage_config.json"
    _files.write_json(path, {"seed": 0})
    _files.write_json(path, {"seed": 1})
    assert json.loads(path.read_text()) == {"seed": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stage_config.json"]


def test_replacing_yields_a_fresh_hidden_path_beside_the_target_with_its_suffix(tmp_path):
    target = tmp_path / "logits_000.npy"
    with _files.replacing(target) as first, _files.replacing(target) as second:
        assert first.parent == tmp_path and first.suffix == ".npy"
        assert first.name.startswith(".logits_000.") and first != second
        assert not first.exists() and not target.exists()  # nothing is created in advance
        np.save(first, np.arange(3))  # np.save keeps a name that ends in .npy as it is
        np.save(second, np.arange(4))
    # The inner block ends first; the outer one's rename, the last, wins whole.
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["logits_000.npy"]


def test_a_failing_writer_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old model")
    with pytest.raises(RuntimeError, match="converter crashed"):
        with _files.replacing(target) as temporary:
            temporary.write_bytes(b"half a mod")  # a writer that dies halfway through
            raise RuntimeError("converter crashed")
    assert target.read_bytes() == b"old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_writer_that_fails_before_writing_creates_nothing(tmp_path):
    with pytest.raises(ValueError, match="no batch"):
        with _files.replacing(tmp_path / "m.tflite"):
            raise ValueError("no batch")
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_fsynced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name the fsynced file")
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _files.write_text(tmp_path / "results.json", "[]")
    (kind, synced), (_, moved_from, moved_to) = events[0], events[1]
    assert kind == "fsync" and synced == moved_from  # the temporary file, first
    assert moved_to == str(tmp_path / "results.json")
    assert events[2] == ("fsync", str(tmp_path))  # then the directory: the rename lasts


def test_a_missing_directory_is_an_os_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _files.write_text(tmp_path / "nowhere" / "summary.md", "x")
    assert list(tmp_path.iterdir()) == []


# --- a full disk: one DiskFullError naming the file system, the file and what is kept


@contextlib.contextmanager
def small_disk(directory: Path, size: str = "1m"):
    """A tmpfs of `size` (1 MB) at DIRECTORY/small_disk: a disk that really fills up. Mounting
    one needs root (CAP_SYS_ADMIN); elsewhere the test is skipped and the ENOSPC-raising tests
    stand in."""
    mount_point = directory / "small_disk"
    mount_point.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)]
    can_mount = os.geteuid() == 0 and shutil.which("mount") is not None
    if not can_mount or subprocess.run(command, capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)  # files may be open


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_in_an_atomic_write_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("[1]")
    monkeypatch.setattr(_files, "_fsync_file", no_space)  # the data did not fit
    with pytest.raises(_files.DiskFullError) as caught:
        _files.write_json(target, [1, 2])
    message = str(caught.value)
    assert message == (
        f"no space left on {_files.file_system_of(tmp_path)} while writing {target}; its "
        "previous content is kept; free space and rerun"
    )
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert target.read_text() == "[1]"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_really_full_disk_leaves_no_temporary_behind(tmp_path):
    with small_disk(tmp_path) as disk:
        _files.write_bytes(disk / "fits.bin", b"x" * 1000)
        with pytest.raises(_files.DiskFullError, match=f"no space left on {disk} while writing"):
            _files.write_bytes(disk / "too_big.bin", b"x" * 2_000_000)
        assert sorted(p.name for p in disk.iterdir()) == ["fits.bin"]


def test_the_full_disk_is_recognised_however_a_library_wraps_it():
    tensorstore = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "head.bias/0": Failed to write 3305472 bytes to '
        "file 15: No space left on device [os_error_code='28']"
    )
    assert _files.is_disk_full(tensorstore)
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert _files.is_disk_full(wrapped)
    assert not _files.is_disk_full(ValueError("OUT_OF_RANGE: byte range not valid"))
    assert not _files.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_stop_when_disk_full_says_what_was_done_and_kept_and_lets_other_errors_through(tmp_path):
    with pytest.raises(_files.DiskFullError) as caught:
        with _files.stop_when_disk_full(tmp_path, "saving step 8 to W", "step 4 is kept"):
            no_space()
    assert str(caught.value).endswith(
        " while saving step 8 to W; step 4 is kept; free space and rerun"
    )
    with pytest.raises(KeyError):
        with _files.stop_when_disk_full(tmp_path, "saving", "nothing"):
            raise KeyError("other")


def test_the_file_system_of_a_path_not_yet_made_is_its_existing_ancestors():
    assert _files.file_system_of("/") == Path("/")
    assert _files.file_system_of("/proc/self/nowhere/x") == Path("/proc")


@pytest.mark.slow  # a stablehlo export of swin_micro, about 2 s
def test_an_export_that_fills_the_disk_is_one_error_and_leaves_no_file(tmp_path):
    import swin_flax
    from swin_flax.deploy.export import export_checkpoint
    from swin_flax.weights.checkpoint import save_checkpoint

    model = swin_flax.create_model("swin_micro", num_classes=10, img_size=32)  # 10 MB
    save_checkpoint(tmp_path / "ckpt", model, swin_flax.init_params(model, 0))
    with small_disk(tmp_path) as disk:
        with pytest.raises(_files.DiskFullError) as caught:
            export_checkpoint(tmp_path / "ckpt", disk / "model.stablehlo", "stablehlo")
        assert str(caught.value) == (
            f"no space left on {disk} while writing {disk / 'model.stablehlo'}; nothing of it "
            "was written; free space and rerun"
        )
        assert list(disk.iterdir()) == []


def test_after_a_failed_restore_only_the_reports_about_its_files_are_dropped(monkeypatch):
    import logging
    import sys
    import types

    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    _files.quiet_failed_restore_reports("/ckpt/damaged")

    def kept(message: str, error: Exception | None = None) -> bool:
        record = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, (), None)
        record.exc_info = (type(error), error, None) if error is not None else None
        return logging.getLogger("asyncio").filter(record)

    unread = "Future exception was never retrieved\nfuture: <Future finished exception=...>"
    assert not kept(unread, ValueError('OUT_OF_RANGE: reading "/ckpt/damaged/params/d/1f"'))
    assert kept(unread, ValueError('OUT_OF_RANGE: reading "/elsewhere/params/d/1f"'))
    assert kept("Task was destroyed but it is pending!")
    late = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
    other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
    sys.unraisablehook(late)
    sys.unraisablehook(other)
    assert seen == [other]
