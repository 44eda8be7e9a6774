"""Teacher once, students many: the teacher-logit cache is exact, never read when its
fingerprint differs, and a damaged shard falls back to the live teacher."""

import hashlib
import json

import numpy as np
import pytest

import swin_flax
from configs import demo
from swin_flax.data.augment import AugmentConfig
from swin_flax.pipeline.run import run_pipeline
from swin_flax.settings import LoopSettings, LossSettings, OptimSettings
from swin_flax.training import teacher_logits
from swin_flax.training.loop import train_stage
from swin_flax.weights import checkpoint
from tests.pipeline.test_run import assert_trees_equal, tiny_dataset

AUGMENT = AugmentConfig(out_size=32)
OPTIM = OptimSettings(epochs=1.0, batch_size=8, peak_lr=1e-3, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def teachers():
    model = swin_flax.create_model("swin_pico", num_classes=4)
    return model, swin_flax.init_params(model, 3), swin_flax.init_params(model, 4)


def open_cache(directory, teacher, params, mode, store_dtype="float32"):
    data = tiny_dataset()
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
    return teacher_logits.LogitCache(directory, fp, mode=mode, num_classes=4)


def distil(stage_dir, teacher, params, cache=None):
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    return train_stage(
        name="tiny",
        stage_dir=stage_dir,
        model=model,
        init_params=swin_flax.init_params(model, 0),
        train_data=tiny_dataset(),
        optim_config=OPTIM,
        loss_config=LossSettings(joint="weighted_harmonic"),
        augment=AUGMENT,
        loop=LoopSettings(log_every_steps=2, checkpoint_every_steps=4, progress_bar=False),
        seed=0,
        teacher=teacher,
        teacher_params=params,
        logit_cache=cache,
    )


def test_cached_equals_live_and_mismatch_and_damage_fall_back(tmp_path, teachers, capsys):
    teacher, params_a, params_b = teachers
    live = distil(tmp_path / "live", teacher, params_a)
    cache_dir = tmp_path / "logits"
    recording = open_cache(cache_dir, teacher, params_a, "record")
    recorded = distil(tmp_path / "record", teacher, params_a, recording)
    assert recording.misses == 6 and recording.complete
    assert "recording the teacher's logits" in capsys.readouterr().out
    reading = open_cache(cache_dir, teacher, params_a, "cached")
    cached = distil(tmp_path / "cached", teacher, params_a, reading)
    assert reading.hits == 6 and reading.misses == 0  # the teacher never ran
    # Exact: float32 on CPU, bit for bit.
    assert_trees_equal(live.params, recorded.params)
    assert_trees_equal(live.params, cached.params)

    # Another teacher: the stored logits are never read, they are recorded anew.
    other = open_cache(cache_dir, teacher, params_b, "record")
    assert "recorded for other settings (teacher_params_sha256)" in capsys.readouterr().out
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
    out = capsys.readouterr().out
    assert "is damaged: its checksum differs" in out and "run the teacher live" in out
    assert "is damaged: it holds float32[1, 8, 4], expected float32[" in out
    assert damaged.misses == index["shards"][0]["stop"] + (
        index["shards"][1]["stop"] - index["shards"][1]["start"]
    )
    assert_trees_equal(live_b.params, again.params)


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


def random_teacher(path):
    """A random swin_micro as the demo's 'fine-tuned' teacher: no fine-tuning in tests."""
    model = swin_flax.create_model("swin_micro", num_classes=10, img_size=32)
    checkpoint.save_checkpoint(path, model, swin_flax.init_params(model, 5))
    return str(path)


def demo_config(teacher, **distill):
    config = demo.get_config("smoke")
    config.teacher.finetuned = teacher
    config.evaluate_teacher = False
    config.data.train_subset = 256
    config.distill.batch_size = 32
    config.loop.checkpoint_every_steps = 4
    for key, value in distill.items():
        setattr(config.distill, key, value)
    return config


def test_live_and_auto_give_identical_results_for_two_kd_students(tmp_path, capsys):
    teacher = random_teacher(tmp_path / "teacher")
    rows = {}
    for mode in ("live", "auto"):
        config = demo_config(teacher, teacher_logits=mode)
        config.runs = "random+kd,transfer+kd"
        rows[mode] = run_pipeline(config, tmp_path / mode)
        out = capsys.readouterr().out
        if mode == "auto":  # two students of seed 0 read the same logits: recorded once
            assert "recording the teacher's logits" in out
            assert "8 steps read from" in out and "0 run live" in out
    assert [r["top1"] for r in rows["live"]] == [r["top1"] for r in rows["auto"]]
    assert not (tmp_path / "live" / "teacher_logits").exists()
    for stage in ("student_random_kd", "student_transfer_kd"):
        _, a = swin_flax.load_checkpoint(tmp_path / "live" / stage / "final_model")
        _, b = swin_flax.load_checkpoint(tmp_path / "auto" / stage / "final_model")
        assert_trees_equal(a, b)
