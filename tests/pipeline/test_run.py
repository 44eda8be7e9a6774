"""The pipeline end to end in smoke size (`swin_flax.pipeline.run`): every stage of
Algorithm 1 on mock CIFAR-100, a rerun that skips them all, one student per seed with its
learning curve and the report; the compute dtype and stops between stages."""

import json

import jax.numpy as jnp
import pytest

import swin_flax
from configs import demo
from swin_flax.errors import RunPreempted
from swin_flax.pipeline.run import compute_dtype, run_pipeline, stop_if_requested
from swin_flax.training import preemption
from tests.helpers import smoke_config


@pytest.mark.slow
def test_smoke_pipeline_under_mock_cifar100(tmp_path, mock_tfds):
    tfds = mock_tfds
    config = smoke_config()
    config.runs = "transfer+kd,random"
    with tfds.testing.mock_data(num_examples=32):
        rows = run_pipeline(config, tmp_path)

    assert [(r["model"], r["init"], r["distillation"]) for r in rows] == [
        ("swin_pico (teacher)", "random", False),
        ("swin_pico_n", "transfer", True),
        ("swin_pico_n", "random", False),
    ]
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    assert all(0.0 <= r["top1"] <= 100.0 and r["images_per_second"] > 0 for r in rows)
    assert rows[1]["params"] < rows[0]["params"]
    assert (
        "| model | init | distillation | top-1 mean ± std | n |"
        in (tmp_path / "summary.md").read_text()
    )
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["student"]["model"] == "swin_pico_n"

    kd_metrics = [
        json.loads(l)
        for l in (tmp_path / "student_transfer_kd" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {"loss_distill", "loss_hard", "weight_distill", "weight_hard"} <= set(kd_metrics[-1])
    assert list((tmp_path / "teacher" / "tensorboard").glob("events.out.tfevents.*"))

    from safetensors.numpy import load_file

    export = load_file(str(tmp_path / "student_transfer_kd" / "timm_model.safetensors"))
    assert (
        export["head.fc.weight"].shape == (100, 256)
        and "layers.3.downsample.reduction.weight" in export
    )

    # The finished teacher is a reusable checkpoint, and a second run skips every stage.
    model, params = swin_flax.load_checkpoint(tmp_path / "teacher" / "final_model")
    assert model.depths == (2, 2, 4, 2) and model.num_classes == 100
    with tfds.testing.mock_data(num_examples=32):
        again = run_pipeline(config, tmp_path)
    assert [r["top1"] for r in again] == [r["top1"] for r in rows]


@pytest.mark.slow
def test_seeds_give_one_student_per_seed_with_curves_and_a_report(tmp_path):
    """--config.seeds: each variant once per seed against one teacher; every epoch's test
    accuracy in metrics.jsonl; the report (mean ± std, plots) at the end."""
    config = demo.get_config("smoke")
    config.runs = "random"
    config.seeds = "0,1"
    config.eval.every_epochs = 0.5
    config.eval.throughput_batch_size, config.eval.throughput_repeats = 8, 3
    rows = run_pipeline(config, tmp_path)
    assert [(r["stage"], r["seed"]) for r in rows] == [
        ("teacher", 0),
        ("student_random_seed0", 0),
        ("student_random_seed1", 1),
    ]
    # Throughput is measured once per architecture: both students share one measurement.
    assert rows[1]["images_per_second"] == rows[2]["images_per_second"]
    # Every stage's final_model/ names its classes and the size training stored images at.
    from swin_flax.weights.checkpoint import load_class_names, load_preprocessing

    for stage in ("teacher", "student_random_seed0", "student_random_seed1"):
        final = tmp_path / stage / "final_model"
        assert load_class_names(final) == [str(d) for d in range(10)]
        assert load_preprocessing(final) == {"stored_size": 32}
    assert isinstance(rows[1]["throughput_noisy"], bool)
    curve = [json.loads(l) for l in (tmp_path / "student_random_seed1" / "metrics.jsonl").open()]
    evals = [l for l in curve if "eval_top1" in l]
    # 21 steps an epoch: every round(10.5) = 10 steps, and at the last step.
    assert [l["epoch"] for l in evals] == pytest.approx([10 / 21, 20 / 21, 1.0])
    assert evals[-1]["eval_top1"] == pytest.approx(rows[2]["top1"], abs=0.01)
    summary = (tmp_path / "summary.md").read_text()
    assert "| swin_micro_n | random | no |" in summary and "| 2 |" in summary
    assert "plots/accuracy_per_epoch.png" in summary
    assert (tmp_path / "plots" / "accuracy_per_epoch.png").read_bytes()[:4] == b"\x89PNG"


def test_compute_dtypes_by_name_and_auto_is_float32_on_the_cpu():
    assert compute_dtype("auto") == jnp.float32  # the tests run on the CPU (conftest.py)
    assert [compute_dtype(n) for n in ("float32", "bfloat16", "float16")] == [
        jnp.float32,
        jnp.bfloat16,
        jnp.float16,
    ]


def test_a_stop_requested_between_stages_ends_the_run_before_the_next(monkeypatch):
    stop_if_requested("student_random")  # no signal: nothing happens
    monkeypatch.setattr(preemption, "stop_requested", lambda: True)
    monkeypatch.setattr(preemption, "pending_signal", lambda: "SIGINT")
    with pytest.raises(RunPreempted, match="stopped by SIGINT before student_random; every"):
        stop_if_requested("student_random")
