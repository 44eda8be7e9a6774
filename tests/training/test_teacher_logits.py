"""Teacher once, students many: the teacher-logit cache is exact, never read when its
fingerprint differs, and a damaged shard falls back to the live teacher."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest

import swin_flax
from swin_flax.data import open_splits
from swin_flax.data.augment import AugmentConfig
from swin_flax.pipeline.run import run_pipeline
from swin_flax.settings import DataSettings, LoopSettings, LossSettings, OptimSettings
from swin_flax.training import logit_store, teacher_logits
from swin_flax.training.loop import train_stage
from tests.helpers import (
    assert_trees_equal,
    demo_config,
    random_teacher,
    tiny_dataset,
    tiny_image_folder,
)

AUGMENT = AugmentConfig(out_size=32)
OPTIM = OptimSettings(epochs=1.0, batch_size=8, peak_lr=1e-3, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def teachers():
    model = swin_flax.create_model("swin_pico", num_classes=4)
    return model, swin_flax.init_params(model, 3), swin_flax.init_params(model, 4)


def open_cache(directory, teacher, params, mode, store_dtype="float32", data=None):
    data = tiny_dataset() if data is None else data
    spe = len(data) // OPTIM.batch_size
    fp = teacher_logits.fingerprint(
        teacher=teacher,
        teacher_params_hash=teacher_logits.tree_hash(params),
        data_hash=teacher_logits.data_hash(data),
        augment=AUGMENT,
        seed=0,
        batch_size=8,
        steps_per_epoch=spe,
        total_steps=spe,
        store_dtype=store_dtype,
    )
    return logit_store.LogitStore(directory, fp, mode=mode, num_classes=4)


def distil(stage_dir, teacher, params, cache=None, data=None):
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    return train_stage(
        name="tiny",
        stage_dir=stage_dir,
        model=model,
        init_params=swin_flax.init_params(model, 0),
        train_data=tiny_dataset() if data is None else data,
        optim_settings=OPTIM,
        loss_settings=LossSettings(joint="weighted_harmonic"),
        augment=AUGMENT,
        loop_settings=LoopSettings(log_every_steps=2, checkpoint_every_steps=4, progress_bar=False),
        seed=0,
        teacher_logits=teacher_logits.TeacherLogitSource(teacher, params, cache),
    )


@pytest.mark.slow
def test_cached_equals_live_and_mismatch_and_damage_fall_back(tmp_path, teachers, capsys):
    teacher, params_a, params_b = teachers
    live = distil(tmp_path / "live", teacher, params_a)
    cache_dir = tmp_path / "logits"
    recording = open_cache(cache_dir, teacher, params_a, "record")
    recorded = distil(tmp_path / "record", teacher, params_a, recording)
    assert recording.misses == 6 and recording.complete
    assert "note: recording the teacher's logits" in capsys.readouterr().err
    reading = open_cache(cache_dir, teacher, params_a, "cached")
    cached = distil(tmp_path / "cached", teacher, params_a, reading)
    assert reading.hits == 6 and reading.misses == 0  # the teacher never ran
    # Exact: float32 on CPU, bit for bit.
    assert_trees_equal(live.params, recorded.params)
    assert_trees_equal(live.params, cached.params)

    # Another teacher: the stored logits are never read, they are recorded anew.
    other = open_cache(cache_dir, teacher, params_b, "record")
    assert "recorded for other settings (teacher_params_sha256)" in capsys.readouterr().err
    assert other.shards == []
    live_b = distil(tmp_path / "record_b", teacher, params_b, other)  # recording = live
    assert other.hits == 0 and other.complete

    # A truncated shard, and one of the wrong shape (its checksum updated to match).
    index = json.loads((cache_dir / "index.json").read_text())
    first, second = (cache_dir / s["file"] for s in index["shards"][:2])
    first.write_bytes(first.read_bytes()[:100])
    np.save(second, np.zeros((1, 8, 4), np.float32))
    index["shards"][1]["sha256"] = hashlib.sha256(second.read_bytes()).hexdigest()
    (cache_dir / "index.json").write_text(json.dumps(index))
    damaged = open_cache(cache_dir, teacher, params_b, "cached")
    again = distil(tmp_path / "damaged", teacher, params_b, damaged)
    err = capsys.readouterr().err
    assert "warning: teacher-logit shard" in err
    assert "is damaged: its checksum differs" in err and "run the teacher live" in err
    assert "is damaged: it holds float32[1, 8, 4], expected float32[" in err
    assert damaged.misses == index["shards"][0]["stop"] + (
        index["shards"][1]["stop"] - index["shards"][1]["start"]
    )
    assert_trees_equal(live_b.params, again.params)


@pytest.mark.slow
def test_bfloat16_storage_is_exact_to_the_recording_run(tmp_path, teachers):
    teacher, params, _ = teachers
    recording = open_cache(tmp_path / "logits", teacher, params, "record", "bfloat16")
    recorded = distil(tmp_path / "record", teacher, params, recording)
    assert (tmp_path / "logits" / recording.shards[0]["file"]).stat().st_size == 128 + 4 * 8 * 4 * 2
    cached = distil(
        tmp_path / "cached",
        teacher,
        params,
        open_cache(tmp_path / "logits", teacher, params, "cached", "bfloat16"),
    )
    assert_trees_equal(recorded.params, cached.params)


@pytest.mark.slow
def test_live_and_auto_give_identical_results_for_two_kd_students(tmp_path, capsys):
    teacher = random_teacher(tmp_path / "teacher")
    rows = {}
    for mode in ("live", "auto"):
        config = demo_config(teacher, teacher_logits=mode)
        config.runs = "random+kd,transfer+kd"
        rows[mode] = run_pipeline(config, tmp_path / mode)
        out = capsys.readouterr()
        if mode == "auto":  # two students of seed 0 read the same logits: recorded once
            assert "recording the teacher's logits" in out.err
            assert "8 steps read from" in out.out and "0 run live" in out.out
    assert [r["top1"] for r in rows["live"]] == [r["top1"] for r in rows["auto"]]
    assert not (tmp_path / "live" / "teacher_logits").exists()
    for stage in ("student_random_kd", "student_transfer_kd"):
        _, a = swin_flax.load_checkpoint(tmp_path / "live" / stage / "final_model")
        _, b = swin_flax.load_checkpoint(tmp_path / "auto" / stage / "final_model")
        assert_trees_equal(a, b)


def test_teacher_logits_say_where_each_step_comes_from(tmp_path, teachers):
    teacher, params, _ = teachers
    live = teacher_logits.TeacherLogitSource(teacher, params)
    assert live.mode == "live" and live.round_to is None and live.close() is None
    assert set(live.step_input(0, put_batch=None)) == {"params"}
    recording = teacher_logits.TeacherLogitSource(
        teacher, params, open_cache(tmp_path / "l", teacher, params, "record", "bfloat16")
    )
    assert recording.mode == "record" and recording.round_to == logit_store.STORE_DTYPES["bfloat16"]
    logits = np.arange(32, dtype=np.float32).reshape(8, 4)
    recording.after_step(0, {"params": params}, logits)
    recording.after_step(1, {"logits": logits}, logits)  # read, not run: not recorded again
    recording.flush()
    assert [(s["start"], s["stop"]) for s in recording.store.shards] == [(0, 1)]
    reading = teacher_logits.TeacherLogitSource(
        teacher, params, open_cache(tmp_path / "l", teacher, params, "cached", "bfloat16")
    )
    assert reading.mode == "cached" and reading.round_to is None
    got = reading.step_input(0, put_batch=lambda x: x * 1)
    np.testing.assert_array_equal(got["logits"], logits)  # small integers: exact in bfloat16
    assert set(reading.step_input(1, put_batch=None)) == {"params"}  # not recorded: live
    with pytest.raises(ValueError, match="opened for 6 steps of 8, the stage runs 7 of 8"):
        reading.check_schedule("tiny", 7, 8)


@pytest.mark.parametrize(
    "option, value",
    [
        ("jax_threefry_partitionable", None),  # None: the opposite of its current value
        ("jax_default_matmul_precision", "highest"),
        ("jax_default_prng_impl", "rbg"),
    ],
)
def test_a_recording_is_not_read_under_another_prng_or_precision(
    tmp_path, teachers, capsys, option, value
):
    """What changes the augmented batches or the teacher's numbers is in the fingerprint."""
    import jax

    teacher, params, _ = teachers
    recording = open_cache(tmp_path / "l", teacher, params, "record")
    recording.put(0, np.zeros((8, 4), np.float32))
    recording.flush()
    before = getattr(jax.config, option)
    new = (not before) if value is None else value
    assert new != before
    jax.config.update(option, new)
    try:
        reading = open_cache(tmp_path / "l", teacher, params, "cached")
    finally:
        jax.config.update(option, before)
    assert reading.shards == [] and reading.get(0) is None
    assert "were recorded for other settings" in capsys.readouterr().err
    assert open_cache(tmp_path / "l", teacher, params, "cached").get(0) is not None


def test_the_fingerprint_names_the_versions_and_the_device():
    env = teacher_logits.environment()
    import jax
    import jaxlib

    assert env["jax"] == jax.__version__ and env["jaxlib"] == jaxlib.__version__
    assert env["swin_flax"] == swin_flax.__version__
    assert env["device_kind"] == jax.devices()[0].device_kind
    assert {"prng_impl", "threefry_partitionable", "matmul_precision"} <= set(env)


@pytest.mark.slow
def test_a_recording_made_on_resident_photos_serves_a_streamed_student(tmp_path, teachers):
    """The data's fingerprint is its listing, the same in both placements: logits recorded
    while the images were resident are read, exactly, by a student that streams them."""
    teacher, params, _ = teachers
    root = tiny_image_folder(tmp_path / "images", n=48, side=32, splits=("train", "test"))
    config = DataSettings(source="image_folder", root=str(root), test_subset=8)
    resident = open_splits(dataclasses.replace(config, placement="device"), seed=0).train
    streamed = open_splits(dataclasses.replace(config, placement="stream"), seed=0).train
    assert teacher_logits.data_hash(resident) == teacher_logits.data_hash(streamed)
    live = distil(tmp_path / "live", teacher, params, data=streamed)
    recording = open_cache(tmp_path / "logits", teacher, params, "record", data=resident)
    distil(tmp_path / "record", teacher, params, recording, data=resident)
    reading = open_cache(tmp_path / "logits", teacher, params, "cached", data=streamed)
    cached = distil(tmp_path / "cached", teacher, params, reading, data=streamed)
    assert reading.hits == 6 and reading.misses == 0
    assert_trees_equal(live.params, cached.params)
