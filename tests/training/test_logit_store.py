"""The on-disk teacher-logit recording: round trip, shard boundaries, damaged files."""

import errno

import numpy as np
import pytest

from swin_flax._files import DiskFullError, file_system_of
from swin_flax.training import logit_store

FINGERPRINT = {"total_steps": 5, "batch_size": 2, "steps_per_epoch": 2, "store_dtype": "float32"}


def logits_of(step):
    return np.full((2, 3), step, np.float32) + np.arange(3, dtype=np.float32)


def test_recorded_steps_read_back_exactly_in_epoch_sized_shards(tmp_path):
    store = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="record", num_classes=3)
    for step in range(5):
        store.put(step, logits_of(step))
    store.flush()
    assert [(s["start"], s["stop"]) for s in store.shards] == [(0, 2), (2, 4), (4, 5)]
    assert store.complete
    reader = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="cached", num_classes=3)
    for step in range(5):
        np.testing.assert_array_equal(reader.get(step), logits_of(step))
    assert reader.get(5) is None and (reader.hits, reader.misses) == (5, 1)
    assert not reader.records


def test_a_damaged_index_is_not_used_and_a_recording_starts_anew(tmp_path, capsys):
    store = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="record", num_classes=3)
    store.put(0, logits_of(0))
    store.flush()
    (tmp_path / "r" / logit_store.INDEX_FILE).write_text("{not json")
    reader = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="cached", num_classes=3)
    assert reader.get(0) is None
    assert "warning: " in (err := capsys.readouterr().err)
    assert "index.json is damaged; its teacher logits are not used" in err
    again = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="record", num_classes=3)
    assert again.shards == [] and sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        logit_store.INDEX_FILE
    ]


def test_disk_size_is_steps_times_batch_times_classes_times_itemsize():
    assert logit_store.disk_bytes(100, 128, 100, "bfloat16") == 100 * 128 * 100 * 2
    assert logit_store.describe_bytes(2_560_000) == "2.6 MB"
    assert logit_store.describe_bytes(999) == "999 B"


def test_auto_storage_dtype_is_the_teachers_compute_dtype():
    import jax.numpy as jnp

    assert logit_store.store_dtype_name("auto", jnp.bfloat16) == "bfloat16"
    assert logit_store.store_dtype_name("auto", jnp.float32) == "float32"
    assert logit_store.store_dtype_name("float16", jnp.float32) == "float16"


def test_a_full_disk_while_recording_is_one_error_and_the_shards_before_are_kept(
    tmp_path, monkeypatch
):
    store = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="record", num_classes=3)
    for step in range(2):
        store.put(step, logits_of(step))  # the first shard (an epoch) is written

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    store.put(2, logits_of(2))
    with pytest.raises(DiskFullError) as caught:
        store.flush()
    assert str(caught.value) == (
        f"no space left on {file_system_of(tmp_path)} while recording the teacher's logits "
        f"of steps 2-2 to {tmp_path / 'r'}; the 2 steps recorded before are kept; free space "
        "and rerun"
    )
    store.flush()  # nothing left to write: a flush when the stage closes adds no error
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        logit_store.INDEX_FILE,
        "steps_0000000_0000002.npy",
    ]
    monkeypatch.undo()
    reader = logit_store.LogitStore(tmp_path / "r", FINGERPRINT, mode="cached", num_classes=3)
    np.testing.assert_array_equal(reader.get(1), logits_of(1))
