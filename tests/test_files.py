"""swin_flax._files: atomic writes. The target holds its old content or its new one, never a
part; nothing is left beside it; the data is on disk before the rename."""

import json
import os

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
