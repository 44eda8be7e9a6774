"""The train command (`swin_flax.commands.train`; `python train.py`, `swin-flax-train`; its
flags and errors are tests/test_cli.py's): the lines it ends with; --plan on every config
of configs/ and on a half-finished work directory, nothing loaded or trained, every
problem of a bad config at once; the installed command's entry point."""

import importlib
import json
from pathlib import Path

import pytest
import tomllib

from configs import cifar10, demo, paper_tables, pretrained, swin_m_kd, swin_n_kd, teacher_finetune
from swin_flax.commands.train import plan_text
from swin_flax.errors import UserInputError
from swin_flax.pipeline import plan, stages
from tests.helpers import REPO, TEACHER_ONLY, run_train_py


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_run_stopped_before_any_evaluation_names_no_results_file(tmp_path):
    result = run_train_py(
        *TEACHER_ONLY, "--config.loop.stop_after_steps=1", f"--workdir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "stage length: fine-tune teacher: 42 steps (2 epochs of 21)"
    assert lines[1].startswith("stopped early: teacher at step 1; run the same command again")
    assert lines[-1] == "results: none (no model was evaluated in this run)"
    assert "results.json" not in result.stdout and not (tmp_path / "results.json").exists()
    assert "||" not in result.stdout  # no empty table either


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_checkpoint_save_that_fills_a_real_disk_ends_in_one_line(tmp_path):
    from tests.test_files import small_disk

    # One checkpoint of the teacher (parameters and optimizer state) takes about 28 MB of
    # the 30 MB disk: step 10's save fits, step 20's does not (the issue's own setup).
    with small_disk(tmp_path, size="30m") as disk:
        result = run_train_py(*TEACHER_ONLY, f"--workdir={disk / 'w'}")
        checkpoints = disk / "w" / "teacher" / "checkpoints"
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.splitlines() == [
            f"error: no space left on {disk} while saving step 20 to {checkpoints}; the "
            "checkpoint of step 10 is kept; free space and rerun"
        ]
        assert sorted(p.name for p in checkpoints.iterdir()) == ["10"]  # no partial save


def folder(root: Path, classes: int, per_class: int) -> Path:
    """An image folder --plan can count (tiny JPEG files; counting decodes none)."""
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    for split in ("train", "test"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(per_class):
                image.save(root / split / f"c{c}" / f"{i}.jpg")
    return root


def test_the_plan_of_every_config_is_printed_without_loading_any_data(tmp_path):
    target, source = folder(tmp_path / "target", 5, 20), folder(tmp_path / "source", 5, 30)
    configs = {
        "cifar10": cifar10.get_config(f"root={folder(tmp_path / 'c10', 10, 15)}"),
        "demo": demo.get_config(),
        "paper_tables": paper_tables.get_config("table=IV"),  # TFDS, not prepared here
        "pretrained": pretrained.get_config(f"source={source},target={target}"),
        "swin_m_kd": swin_m_kd.get_config(),
        "swin_n_kd": swin_n_kd.get_config(),
        "teacher_finetune": teacher_finetune.get_config(),
    }
    assert sorted(configs) == sorted(
        p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "common")
    )
    texts = {name: plan_text(config, tmp_path / name) for name, config in configs.items()}
    assert not any((tmp_path / name).exists() for name in configs)  # nothing written
    assert "Plan for" in texts["demo"] and "1,347 training images, 10 classes" in texts["demo"]
    assert "630 (30 epochs of 21 batches of 64)" in texts["demo"]
    assert "student_transfer_kd (student transfer_kd): not started" in texts["demo"]
    assert "TFDS 'cifar100' is not prepared yet, 100 classes" in texts["paper_tables"]
    assert texts["paper_tables"].count("student_random_kd_") == 8  # students x alpha
    assert "the count once TFDS 'cifar100' is not prepared yet" in texts["paper_tables"]
    assert "pretrain (pretrain teacher (source task))" in texts["pretrained"]
    assert "student_random_long_seed2 (student random_long)" in texts["pretrained"]
    assert "135 training images, 10 classes" in texts["cifar10"]  # 150, 10% carved out


def test_the_plan_of_a_half_finished_workdir_says_what_is_done(tmp_path):
    config = demo.get_config("smoke")
    run_plan = plan.build_plan(plan.load_settings(config), tmp_path)
    for name, progress in [("teacher", "done"), ("student_random", "checkpoint")]:
        stage = tmp_path / name
        (stage / "checkpoints" / "7").mkdir(parents=True)
        (stage / stages.STAGE_CONFIG_FILE).write_text(json.dumps(run_plan.stage(name).record))
        if progress == "done":
            (stage / stages.STAGE_DONE_FILE).write_text("{}")
    other = dict(run_plan.stage("student_random_kd").record, student_seed=5)
    (tmp_path / "student_random_kd" / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "student_random_kd" / stages.STAGE_CONFIG_FILE).write_text(json.dumps(other))
    text = plan_text(config, tmp_path)
    assert "1. teacher (fine-tune teacher): done" in text
    assert "2. student_random (student random): resumes at step 7" in text
    assert (
        "3. student_random_kd (student random_kd): refused: started with other settings "
        "(student_seed)"
    ) in text
    assert "4. student_transfer (student transfer): not started" in text


def test_a_bad_config_gets_every_problem_in_the_plan(tmp_path):
    config = demo.get_config("smoke")
    config.distill.alpha = 2.0
    config.finetune.warmup_epochs = 5.0
    config.runs = "random,transfer+kd,nonsense"
    with pytest.raises(UserInputError) as caught:
        plan_text(config, tmp_path)
    problems = str(caught.value).split("\n  - ")[1:]
    assert len(problems) == 3 and "unknown student variant 'nonsense'" in problems[0]
    assert "distill.alpha must be a weight in [0, 1], got 2.0" in problems[1]
    assert "finetune.warmup_epochs (5.0) must be shorter than finetune.epochs (1.0)" in problems[2]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_train_py_plan_exits_0_and_a_bad_config_exits_2_with_every_problem(tmp_path):
    done = run_train_py("--config", "configs/demo.py:smoke", "--plan", f"--workdir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"Plan for {tmp_path}: 5 stages; 1,347 training images")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    bad = run_train_py(
        "--config", "configs/demo.py:smoke", "--plan", "--config.distill.alpha=2",
        "--config.runs=nonsense", f"--workdir={tmp_path}",
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: invalid config:\n  - unknown student variant")
    assert "distill.alpha must be a weight" in bad.stderr and "Traceback" not in bad.stderr


def test_every_program_is_an_installed_command_and_a_root_script():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    programs = {
        "train": "train",
        "convert": "convert_timm_weights",
        "export": "export",
        "predict": "predict",
    }
    assert sorted(scripts) == sorted(f"swin-flax-{name}" for name in programs)
    for name, root in programs.items():
        module, function = scripts[f"swin-flax-{name}"].split(":")
        command = importlib.import_module(module)
        assert module == f"swin_flax.commands.{name}" and callable(getattr(command, function))
        text = (REPO / f"{root}.py").read_text()
        assert f"from swin_flax.commands.{name} import main, run" in text
