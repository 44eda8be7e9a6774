"""The plan's loop end to end in smoke size (`swin_flax.pipeline.run`): every stage of
Algorithm 1 on mock CIFAR-100, a rerun that skips them all, one student per seed with its
learning curve and the report; a stage two sweep rows share trains once; a work directory
of the code before the plan resumed and reused; the teacher pretrained on a source task
(a timm file the fine-tuning starts from, reused by later runs, the strong scratch
baseline); the regime warning; the compute dtype and stops between stages."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import swin_flax
from configs import demo
from configs import pretrained as pretrained_config
from swin_flax.errors import RunPreempted
from swin_flax.pipeline import plan, stages
from swin_flax.pipeline.run import compute_dtype, regime_warning, run_pipeline, stop_if_requested
from swin_flax.pipeline.students import initial_teacher_params
from swin_flax.training import preemption
from swin_flax.weights.sources import load_state_dict
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
def test_a_sweep_over_stage_feature_weights_runs_the_teacher_live(tmp_path, mock_tfds):
    config = smoke_config()
    config.runs = "transfer+kd"
    config.evaluate_teacher = False
    config.distill.teacher_logits = "auto"  # would record for two readers: features run live
    config.sweep = "feature_weights=0 0 0 0,0 0 1 1"
    with mock_tfds.testing.mock_data(num_examples=32):
        rows = run_pipeline(config, tmp_path)
    stages_run = [r["stage"] for r in rows]
    assert stages_run == [
        "student_transfer_kd_feature_weights0-0-0-0",
        "student_transfer_kd_feature_weights0-0-1-1",
    ]
    last = [
        json.loads((tmp_path / stage / "metrics.jsonl").read_text().splitlines()[-1])
        for stage in stages_run
    ]
    assert "loss_features" not in last[0] and last[1]["loss_features"] > 0
    record = json.loads((tmp_path / stages_run[1] / "stage_config.json").read_text())
    assert record["distill"]["feature_weights"] == "0 0 1 1"
    assert not (tmp_path / "teacher_logits").exists()  # nothing recorded: one reader, live
    model, params = swin_flax.load_checkpoint(tmp_path / stages_run[1] / "final_model")
    assert model.depths == (2, 2, 2, 2) and "feature_projections" not in params


@pytest.mark.slow
def test_a_multi_exit_run_scores_its_full_path_and_exports_its_exit_as_the_student(
    tmp_path, mock_tfds
):
    from swin_flax.model.exits import MultiExitSwin

    config = smoke_config()  # teacher swin_pico (2, 2, 4, 2), the exit swin_pico_n's blocks
    config.runs = "exits"
    config.evaluate_teacher = False
    with mock_tfds.testing.mock_data(num_examples=32):
        rows = run_pipeline(config, tmp_path)
    assert [(r["model"], r["init"], r["distillation"], r["stage"]) for r in rows] == [
        ("swin_pico (multi-exit full path)", "multi-exit", False, "exits"),
        ("swin_pico_n (exit of the multi-exit model)", "multi-exit", True, "exits"),
    ]
    assert not (tmp_path / "teacher").exists()  # no separate teacher is trained
    full, params = swin_flax.load_checkpoint(tmp_path / "exits" / "final_model")
    student, student_params = swin_flax.load_checkpoint(tmp_path / "exits" / "exit" / "final_model")
    assert full.depths == (2, 2, 4, 2) and student.depths == (2, 2, 2, 2)
    assert rows[1]["params"] < rows[0]["params"]
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    both = MultiExitSwin(full.config, (((0, 1), (0, 1), (0, 1), (0, 1)),))
    logits = both.apply({"params": params}, images)
    np.testing.assert_allclose(full.apply({"params": params}, images), logits[0], atol=1e-5)
    np.testing.assert_allclose(
        student.apply({"params": student_params}, images), logits[1], atol=1e-5
    )
    last = json.loads((tmp_path / "exits" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_full_path", "exit1_loss_hard", "exit1_loss_distill", "exit1_accuracy"} <= set(
        last
    )
    assert (tmp_path / "exits" / "exit" / "timm_model.safetensors").exists()
    # interrupted after 3 steps and resumed: the same model as the run that was not
    config.loop.stop_after_steps = 3
    with mock_tfds.testing.mock_data(num_examples=32):
        assert run_pipeline(config, tmp_path / "resumed") == []  # stopped early
    assert not (tmp_path / "resumed" / "exits" / "exit").exists()
    config.loop.stop_after_steps = 0
    with mock_tfds.testing.mock_data(num_examples=32):
        again = run_pipeline(config, tmp_path / "resumed")
    _, resumed = swin_flax.load_checkpoint(tmp_path / "resumed" / "exits" / "final_model")
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
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


def test_a_transfer_student_at_or_above_its_teacher_warns():
    text = regime_warning(71.0, 72.5, stage="student_transfer_seed0")
    assert text.startswith("the transferred student (student_transfer_seed0) already")
    assert "72.50% on the validation set, its teacher 71.00%" in text
    assert "pull it toward a weaker teacher" in text
    # measured on validation: no distillation beat transfer alone, KL at T=4 only tied it
    assert (
        "Keep the transfer student (no distillation measured in this regime beat it on "
        "validation) or train a stronger teacher" in text
    )
    assert "temperature=4, joint=arithmetic, alpha=0.5) tied it there" in text
    assert "best measured" not in text
    assert regime_warning(72.5, 72.5, stage="s") is not None  # a tie: KD cannot lift it


def test_a_teacher_above_its_transfer_student_is_the_papers_regime_and_does_not_warn():
    assert regime_warning(80.0, 75.0, stage="student_transfer") is None


# --- one stage for two sweep rows; a work directory of the code before the plan -----------


@pytest.mark.slow
def test_the_transfer_student_of_a_sweep_over_distillation_trains_once(tmp_path):
    config = demo.get_config("smoke")
    config.runs = "transfer,transfer+kd"
    config.sweep = "distillation=mse; distillation=kl,temperature=4"
    config.data.train_subset = 256
    rows = run_pipeline(config, tmp_path)
    students = sorted(p.name for p in tmp_path.glob("student_*"))
    assert students == [
        "student_transfer_distillationmse",
        "student_transfer_kd_distillationkl_temperature4",
        "student_transfer_kd_distillationmse",
    ]
    transfer = [r for r in rows if r["init"] == "transfer" and not r["distillation"]]
    assert [(r["stage"], r["sweep_row"]) for r in transfer] == [
        ("student_transfer_distillationmse", "distillation=mse"),
        ("student_transfer_distillationmse", "distillation=kl, temperature=4"),
    ]
    assert transfer[0]["top1"] == transfer[1]["top1"]
    summary = (tmp_path / "summary.md").read_text()
    top1 = f"{transfer[0]['top1']:.2f}"
    assert f"| swin_micro_n | transfer | no | {top1} | {top1} |" in summary


def old_teacher_record(config) -> dict:
    """The teacher's stage_config.json as the code before the plan wrote it (da4bd3d's
    stages.teacher_fingerprint, frozen)."""
    s = plan.load_settings(config)
    return {
        "seed": s.seed,
        "compute_dtype": s.compute_dtype,
        "data": dataclasses.asdict(s.data),
        "teacher": dataclasses.asdict(s.teacher),
        "finetune": dataclasses.asdict(s.finetune),
    }


@pytest.mark.slow
def test_a_workdir_of_the_code_before_the_plan_is_resumed_and_reused(tmp_path, capsys):
    """The teacher stopped at step 4 by the old code: its checkpoint and its old-format
    stage_config.json. The new code resumes it (no note of changed settings), then a rerun
    reuses the finished stage untouched."""
    config = demo.get_config("smoke")
    config.runs = ""
    config.eval.throughput_batch_size = 0
    config.loop.checkpoint_every_steps = 4
    stopped = config.copy_and_resolve_references()
    stopped.loop.stop_after_steps = 4
    run_pipeline(stopped, tmp_path)
    (tmp_path / "teacher" / stages.STAGE_CONFIG_FILE).write_text(
        json.dumps(old_teacher_record(config), indent=2)
    )
    capsys.readouterr()
    rows = run_pipeline(config, tmp_path)
    captured = capsys.readouterr()
    assert "resumes with changed" not in captured.err
    metrics = [json.loads(line) for line in (tmp_path / "teacher" / "metrics.jsonl").open()]
    assert metrics[0]["step"] <= 4 < metrics[-1]["step"]  # resumed, not started again
    done = (tmp_path / "teacher" / stages.STAGE_DONE_FILE).stat().st_mtime_ns
    assert run_pipeline(config, tmp_path) == rows
    assert (tmp_path / "teacher" / stages.STAGE_DONE_FILE).stat().st_mtime_ns == done


# --- the teacher pretrained on a source task (configs/pretrained.py) ------------------------


def image_folder(root, classes, per_class, seed):
    """Colour-coded classes (a learnable signal) with noise, as JPEGs."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for index, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
                pixels[..., index % 3] = 40 + 70 * index
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("tasks")
    source = image_folder(base / "source", ["a", "b", "c"], {"train": 40, "test": 10}, 0)
    target = image_folder(base / "target", ["d", "e"], {"train": 40, "test": 10}, 1)
    return source, target


def config_for(source, target, **overrides):
    config = pretrained_config.get_config(f"source={source},target={target},smoke")
    config.eval.throughput_batch_size = 0
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(config, section) if section else config, name, value)
    return config


@pytest.mark.slow
def test_pretrain_writes_a_timm_file_the_teacher_starts_from_and_later_runs_reuse_it(
    tmp_path, folders, capsys
):
    source, target = folders
    workdir = tmp_path / "run"
    rows = run_pipeline(config_for(source, target), workdir)
    out = capsys.readouterr()

    timm_file = workdir / "pretrain" / stages.TIMM_EXPORT_FILE
    state_dict = load_state_dict(timm_file)
    assert state_dict["head.fc.weight"].shape == (3, 384)  # the source task's 3 classes
    stored = json.loads((workdir / "teacher" / stages.STAGE_CONFIG_FILE).read_text())
    assert stored["teacher"]["init"] == f"timm:{timm_file}"
    # The teacher's fine-tuning starts from the file: every weight but the new 2-class head.
    _, pretrained_params = swin_flax.load_checkpoint(workdir / "pretrain" / "final_model")
    model = swin_flax.create_model("cifar_swin_t_p4", num_classes=2)
    start = initial_teacher_params(f"timm:{timm_file}", model, seed=0)
    assert start["head"]["kernel"].shape == (384, 2)
    # Each final_model/ names its own task's classes: the source's, and the target's.
    from swin_flax.weights.checkpoint import load_class_names

    assert load_class_names(workdir / "pretrain" / "final_model") == ["a", "b", "c"]
    assert load_class_names(workdir / "teacher" / "final_model") == ["d", "e"]
    np.testing.assert_array_equal(
        start["layers_2"]["blocks_3"]["mlp"]["fc1"]["kernel"],
        pretrained_params["layers_2"]["blocks_3"]["mlp"]["fc1"]["kernel"],
    )

    labels = [r["model"] for r in rows]
    assert labels[0] == "cifar_swin_t_p4 (teacher, source task)" and rows[0]["task"] == "source"
    assert "cifar_swin_t_p4 (teacher)" in labels
    strong = next(r for r in rows if r.get("baseline") == "strong scratch")
    assert strong["model"] == "cifar_swin_n_p4 (strong scratch)" and strong["init"] == "random"
    for r in rows[1:]:
        assert {"init", "distillation", "seed", "top1", "val_top1"} <= set(r)
    # The strong baseline trains as many steps as the teacher's pretraining and fine-tuning.
    steps = {
        name: json.loads((workdir / name / stages.STAGE_DONE_FILE).read_text())["steps"]
        for name in ("pretrain", "teacher", "student_random_long_seed0")
    }
    assert steps["student_random_long_seed0"] == steps["pretrain"] + steps["teacher"]
    assert (
        "pretrained teacher:" in out.out
        and "## Recommended" in (workdir / "summary.md").read_text()
    )

    # A second run in the workdir, on another target, finds the pretraining finished.
    done = (workdir / "pretrain" / stages.STAGE_DONE_FILE).stat().st_mtime_ns
    rows_again = run_pipeline(config_for(source, target, runs="transfer"), workdir)
    assert (workdir / "pretrain" / stages.STAGE_DONE_FILE).stat().st_mtime_ns == done
    assert rows_again[0]["top1"] == rows[0]["top1"]


@pytest.mark.slow
def test_a_teacher_weaker_than_its_transfer_student_is_named_before_kd(tmp_path, folders, capsys):
    """A random 'fine-tuned' teacher: the trained transfer student beats it on validation."""
    source, target = folders
    teacher = swin_flax.create_model("cifar_swin_t_p4", num_classes=2)
    swin_flax.save_checkpoint(tmp_path / "weak", teacher, swin_flax.init_params(teacher, 0))
    config = config_for(source, target, runs="transfer,transfer+kd", **{"pretrain.root": ""})
    config.teacher.finetuned = str(tmp_path / "weak")
    config.distill.epochs = 4
    run_pipeline(config, tmp_path / "run")
    err = capsys.readouterr().err
    assert "warning: the transferred student (student_transfer_seed0) already scores" in err
    assert "distillation will pull it toward a weaker teacher" in err
