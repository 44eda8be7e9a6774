"""The framework end to end in smoke size: pipeline, resume, multi-device, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import swin_flax
from configs import common, demo, paper_tables, swin_m_kd
from swin_flax.data.augment import AugmentConfig
from swin_flax.data.dataset import ArrayDataset
from swin_flax.errors import DatasetUnavailableError, UserInputError
from swin_flax.pipeline.run import run_pipeline
from swin_flax.settings import LoopSettings, LossSettings, OptimSettings, RunSettings
from swin_flax.training.loop import train_stage

REPO = Path(__file__).resolve().parents[2]


def tiny_dataset(n=48, classes=4, seed=0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.int32)
    images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    images[..., 0] = (labels * 60)[:, None, None].astype(np.uint8)  # a learnable signal
    return ArrayDataset(images=images, labels=labels, num_classes=classes)


def run_tiny_stage(stage_dir, *, stop_after=None, mesh=None, steps_epochs=2.0, teacher=None):
    data = tiny_dataset()
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    loss = LossSettings(joint="weighted_harmonic" if teacher else "hard_only", w_d=13.0, w_s=1.0)
    return train_stage(
        name="tiny",
        stage_dir=stage_dir,
        model=model,
        init_params=swin_flax.init_params(model, 0),
        train_data=data,
        optim_config=OptimSettings(
            epochs=steps_epochs, batch_size=8, peak_lr=1e-3, warmup_epochs=0.5
        ),
        loss_config=loss,
        augment=AugmentConfig(out_size=32),
        loop=LoopSettings(
            log_every_steps=2,
            checkpoint_every_steps=4,
            progress_bar=False,
            stop_after_steps=stop_after or 0,
        ),
        seed=0,
        mesh=mesh,
        teacher=teacher[0] if teacher else None,
        teacher_params=teacher[1] if teacher else None,
    )


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_after_interruption_gives_identical_parameters(tmp_path):
    full = run_tiny_stage(tmp_path / "full")
    assert full.completed and full.steps == 12

    # Stops after step 6; the newest checkpoint is step 4, so steps 5-6 are lost and redone.
    partial = run_tiny_stage(tmp_path / "resumed", stop_after=6)
    assert not partial.completed and partial.steps == 6
    resumed = run_tiny_stage(tmp_path / "resumed")
    assert resumed.completed and resumed.steps == 12
    assert_trees_equal(full.params, resumed.params)

    lines = [
        json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    # Step 6 was logged by the interrupted run and again after the resume: kept once.
    assert [l["step"] for l in lines] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "loss_hard", "learning_rate", "grad_norm", "accuracy"} <= set(lines[-1])

    # Resuming a finished stage runs no step but still reports the final metrics.
    again = run_tiny_stage(tmp_path / "resumed")
    assert again.completed and again.steps == 12
    assert again.final_metrics["loss"] == pytest.approx(lines[-1]["loss"])
    assert again.final_metrics == resumed.final_metrics


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path):
    data = tiny_dataset()
    model = swin_flax.create_model("swin_pico_n", num_classes=4)
    with pytest.raises(Exception) as info:
        train_stage(
            name="nan",
            stage_dir=tmp_path,
            model=model,
            init_params=swin_flax.init_params(model, 0),
            train_data=data,
            optim_config=OptimSettings(epochs=2, batch_size=8, peak_lr=1e30, warmup_epochs=0),
            loss_config=LossSettings(joint="hard_only"),
            augment=AugmentConfig(out_size=32),
            loop=LoopSettings(log_every_steps=1, checkpoint_every_steps=1, progress_bar=False),
            seed=0,
        )
    assert type(info.value).__name__ == "TrainingDivergedError"
    assert "non-finite loss" in str(info.value) and "run the same command again" in str(info.value)
    checkpoints = sorted(
        int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert checkpoints, "the last good checkpoint must be kept"


MULTI_DEVICE_SCRIPT = r"""
import sys, jax, numpy as np
sys.path.insert(0, sys.argv[1])
from tests.pipeline.test_run import run_tiny_stage
from swin_flax.training.distributed import make_mesh
import swin_flax
assert jax.device_count() == 4, jax.devices()
teacher = swin_flax.create_model("swin_pico", num_classes=4)
teacher = (teacher, swin_flax.init_params(teacher, 3))
one = run_tiny_stage(sys.argv[2] + "/one", mesh=make_mesh(jax.devices()[:1]), steps_epochs=1, teacher=teacher)
four = run_tiny_stage(sys.argv[2] + "/four", mesh=make_mesh(jax.devices()), steps_epochs=1, teacher=teacher)
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(four.params)))
print("MAX_PARAM_DIFF", diff)
"""


def test_four_devices_match_one_device(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT, str(REPO), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    diff = float(out.stdout.split("MAX_PARAM_DIFF")[1])
    assert diff < 1e-5


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data; its builders look unprepared, so report the network as up
    (the mocked download is a no-op) to reach the mocked reader."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from swin_flax.data import tfds_source

    monkeypatch.setattr(tfds_source, "network_available", lambda *a, **k: True)
    return tfds


def smoke_config():
    config = swin_m_kd.get_config("smoke")
    config.data.name = "cifar100"
    return config


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


def test_transferred_student_starts_from_teacher_prefix(tmp_path, mock_tfds):
    """With a zero learning rate the student keeps exactly its transferred initialisation."""
    tfds = mock_tfds
    config = smoke_config()
    config.runs = "transfer"
    config.evaluate_teacher = False
    config.distill.peak_lr = 1e-30  # updates below float32 resolution: the student keeps its init
    with tfds.testing.mock_data(num_examples=32):
        run_pipeline(config, tmp_path)
    _, teacher = swin_flax.load_checkpoint(tmp_path / "teacher" / "final_model")
    _, student = swin_flax.load_checkpoint(tmp_path / "student_transfer" / "final_model")
    for path in ("patch_embed", "layers_0", "layers_1"):
        assert_trees_equal(teacher[path], student[path])
    assert_trees_equal(teacher["layers_2"]["blocks_1"], student["layers_2"]["blocks_1"])
    assert "blocks_2" not in student["layers_2"]
    assert not np.allclose(
        teacher["layers_3"]["blocks_0"]["mlp"]["fc1"]["kernel"],
        student["layers_3"]["blocks_0"]["mlp"]["fc1"]["kernel"],
    )


def test_offline_dataset_error_is_immediate(tmp_path, monkeypatch):
    from swin_flax.data import tfds_source

    monkeypatch.setattr(tfds_source, "network_available", lambda *a, **k: False)
    config = smoke_config()
    config.data.data_dir = str(tmp_path / "tfds")
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError, match="cifar100.*data_dir"):
        run_pipeline(config, tmp_path / "work")
    assert time.monotonic() - start < 30


def run_train_py(*args, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config", "configs/swin_m_kd.py:smoke", "--config.distill.epochz=1"],
            "unknown config key in a --config.* override: 'epochz'",
        ),
        (["--config", "configs/swin_m_kd.py:smok"], "unknown config argument 'smok'"),
        (["--config", "configs/paper_tables.py:table=XX,smoke"], "table must be one of"),
        (
            ["--config", "configs/demo.py:smoke", "--config.distill.epochs=abc"],
            "could not convert string to float: 'abc'",
        ),
        (["--config", "configs/no_such_config.py"], "No such file or directory"),
    ],
)
def test_train_py_reports_bad_config_flags_in_one_line(tmp_path, args, message):
    result = run_train_py(*args, "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_train_py_reports_bad_input_without_traceback(tmp_path):

    missing = run_train_py(
        "--config",
        "configs/demo.py:smoke",
        "--workdir",
        str(tmp_path),
        "--config.teacher.finetuned=/nonexistent/teacher",
    )
    assert missing.returncode == 2
    assert "error:" in missing.stderr and "/nonexistent/teacher" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_unknown_keys_in_a_config_file_are_rejected():
    config = common.get_base_config()
    with pytest.raises(AttributeError, match=r'Did you mean "w_d" instead of "w_dd"'):
        config.distill.w_dd = 3  # the base config is locked: a config file's typo fails
    values = config.to_dict()
    values["distill"]["w_dd"] = 3  # a config that bypassed the lock (a plain dict)
    with pytest.raises(UserInputError, match=r"distill.w_dd \(did you mean distill.w_d\?\)"):
        RunSettings.from_config(values)


def test_out_of_range_values_are_reported_together_before_any_data_loads(tmp_path):
    config = smoke_config()
    config.data.crop_padding = -1
    config.eval.throughput_batch_size = -1
    config.student.cut_points = (5,)
    with pytest.raises(UserInputError) as info:
        run_pipeline(config, tmp_path)  # no mock data: the check must come first
    message = str(info.value)
    assert "data.crop_padding must be an int >= 0" in message
    assert "eval.throughput_batch_size must be 0 (no throughput) or a batch size" in message
    assert "student.cut_points must be empty" in message and "got (5,)" in message


def test_student_batch_larger_than_the_data_fails_before_the_teacher_trains(tmp_path, mock_tfds):
    config = smoke_config()
    config.distill.batch_size = 64
    with (
        mock_tfds.testing.mock_data(num_examples=32),
        pytest.raises(
            UserInputError, match=r"distill.batch_size 64 is larger than the training set"
        ),
    ):
        run_pipeline(config, tmp_path)
    assert not (tmp_path / "teacher").exists()


def test_impossible_cut_points_are_a_clear_error(tmp_path, mock_tfds):
    tfds = mock_tfds
    config = smoke_config()
    config.student.cut_points = (9, 4)
    with tfds.testing.mock_data(num_examples=32), pytest.raises(ValueError, match="cut"):
        run_pipeline(config, tmp_path)


@pytest.mark.parametrize(
    "arg,runs,joint",
    [
        ("table=II,smoke", "random", "weighted_harmonic"),
        ("table=IV,alpha=0.5,teacher=swin_b,smoke", "random+kd", "arithmetic"),
        ("table=VI,interval=0.5-1,smoke", "random+kd", "linear_alpha"),
        ("table=VII,w_d=5,smoke", "random+kd", "weighted_harmonic"),
        ("table=VIII,smoke", "transfer", "weighted_harmonic"),
        ("table=IX,smoke", "random,random+kd,transfer,transfer+kd", "weighted_harmonic"),
    ],
)
def test_paper_table_rows_select_the_right_experiment(arg, runs, joint):
    config = paper_tables.get_config(arg)
    assert config.runs == runs and config.distill.joint == joint
    assert RunSettings.from_config(config).runs == runs  # every key declared, every value valid


def test_paper_table_row_values():
    assert paper_tables.get_config("table=IV,alpha=0.5").distill.alpha == 0.5
    assert paper_tables.get_config("table=IV").distill.epochs == 30
    vi = paper_tables.get_config("table=VI,interval=0.5-1")
    assert (vi.distill.alpha_start, vi.distill.alpha_end) == (0.5, 1.0)
    assert paper_tables.get_config("table=VII,w_d=13").distill.w_d == 13.0
    assert paper_tables.get_config("table=IV,teacher=swin_b").teacher.init.endswith(
        "swin_base_patch4_window7_224.ms_in1k"
    )


def test_kill_minus_nine_then_rerun_resumes_to_the_same_result(tmp_path):
    """A real SIGKILL in the middle of the demo's teacher stage, then the same command."""
    args = [
        "--config",
        "configs/demo.py:smoke",
        "--config.runs=",
        "--config.finetune.epochs=1",
        "--config.finetune.warmup_epochs=0.5",
        "--config.loop.checkpoint_every_steps=5",
        "--config.eval.throughput_batch_size=0",
    ]
    clean = run_train_py(*args, "--workdir", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, "--workdir", str(killed_dir)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    checkpoints = killed_dir / "teacher" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir())
    ):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "teacher" / "stage_done.json").exists()

    resumed = run_train_py(*args, "--workdir", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, clean_params = swin_flax.load_checkpoint(tmp_path / "clean" / "teacher" / "final_model")
    _, resumed_params = swin_flax.load_checkpoint(killed_dir / "teacher" / "final_model")
    assert_trees_equal(clean_params, resumed_params)
    assert (
        json.loads((killed_dir / "results.json").read_text())[0]["top1"]
        == json.loads((tmp_path / "clean" / "results.json").read_text())[0]["top1"]
    )


def test_demo_config_is_the_default_and_offline():
    config = demo.get_config()
    assert config.data.source == "digits" and config.teacher.init == "random"
    assert config.runs == "random,random+kd,transfer,transfer+kd"


def test_teacher_init_from_timm_safetensors_replaces_only_the_head(tmp_path):
    """`teacher.init = 'timm:<file>'`: converted on the fly (no torch), new head for the task."""
    from swin_flax.pipeline.students import initial_teacher_params
    from swin_flax.weights.timm import save_timm_safetensors

    imagenet_like = swin_flax.create_model("swin_pico", num_classes=1000)
    source = swin_flax.init_params(imagenet_like, 7)
    path = save_timm_safetensors(source, tmp_path / "pico.safetensors")

    task_model = swin_flax.create_model("swin_pico", num_classes=10)
    params = initial_teacher_params(f"timm:{path}", task_model, seed=0)
    assert params["head"]["kernel"].shape == (256, 10)
    source_body = {k: v for k, v in source.items() if k != "head"}
    assert_trees_equal(source_body, {k: v for k, v in params.items() if k != "head"})


def test_a_stage_refuses_to_resume_with_other_settings(tmp_path, capsys):
    from swin_flax.pipeline.stages import check_stage_config, student_fingerprint

    config = smoke_config()
    variant = "transfer_kd"
    check_stage_config(tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0))

    # Nothing to lose yet (no checkpoint): a stage that failed early starts with new settings.
    config.distill.epochs = 5
    check_stage_config(tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0))
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)  # now it has progress

    config.distill.peak_lr = 1e-5  # allowed: e.g. to rescue a diverged run
    config.data.data_dir = "/moved/tfds"  # allowed: the data moved, or the rerun is offline
    config.data.download = False
    check_stage_config(tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0))
    note = capsys.readouterr().out
    assert "resumes with changed" in note
    assert {"distill.peak_lr", "data.data_dir", "data.download"} <= set(
        note.split("changed ")[1].strip().split(", ")
    )

    config.distill.epochs = 7
    with pytest.raises(UserInputError, match=r"different settings \(distill.epochs\).*--workdir"):
        check_stage_config(
            tmp_path, student_fingerprint(RunSettings.from_config(config), variant, 0)
        )


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: setattr(c.distill, "joint", "harmonik"), "harmonik"),
        (lambda c: setattr(c.distill, "joint", "hard_only"), "hard_only"),
        (lambda c: setattr(c.student, "tail_init", "copy"), "tail_init"),
        (lambda c: setattr(c.student, "model", "swin_q"), "swin_q"),
        (lambda c: setattr(c, "compute_dtype", "int8"), "compute_dtype"),
    ],
)
def test_config_mistakes_fail_before_any_data_is_loaded(tmp_path, change, message):
    config = smoke_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        run_pipeline(config, tmp_path)  # no mock data: loading would fail differently


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
