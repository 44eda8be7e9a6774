"""The entry points' error wrapper (`swin_flax.cli`): a user's mistake is one `error:` line
and exit code 2, a signal-driven stop exit code 75 with the command that resumes, a bug
its traceback; train.py's bad flags and inputs end the same way."""

import pytest

from swin_flax import cli
from swin_flax.errors import CheckpointError, RunPreempted, TrainingDivergedError
from tests.helpers import run_train_py


@pytest.mark.multiprocess
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
            "error: --config.distill.epochs: a number was expected, got abc\n",
        ),
        (
            ["--config", "configs/demo.py:smoke", "--config.finetune.batch_size=16.5"],
            "error: --config.finetune.batch_size: an int was expected, got 16.5\n",
        ),
        (["--config", "configs/no_such_config.py"], "No such file or directory"),
    ],
)
def test_train_py_reports_bad_config_flags_in_one_line(tmp_path, args, message):
    result = run_train_py(*args, "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") or "\nerror: " in result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.multiprocess
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


def test_the_exit_code_is_mains_and_none_means_success():
    assert cli.run(lambda *args: 3, "a") == 3
    assert cli.run(lambda: None) == 0


@pytest.mark.parametrize(
    "error",
    [
        CheckpointError("no such checkpoint directory /x"),
        FileNotFoundError(2, "No such file or directory", "/x"),
        TrainingDivergedError("non-finite loss at step 3"),
    ],
)
def test_a_users_error_is_one_line_and_exit_code_2(error, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)

    def main():
        raise error

    assert cli.run(main) == cli.USAGE_EXIT_CODE == 2
    err = capsys.readouterr().err
    assert err == f"error: {error}\n"


def test_a_preempted_run_exits_75_with_the_resume_hint_on_its_own_line(capsys):
    def main():
        raise RunPreempted("teacher stopped by SIGTERM after step 7")

    code = cli.run(main, resume_hint=lambda: "resume with: python train.py --workdir=w")
    assert code == cli.PREEMPTED_EXIT_CODE == 75
    assert capsys.readouterr().err.splitlines() == [
        "teacher stopped by SIGTERM after step 7",
        "resume with: python train.py --workdir=w",
    ]


def test_a_bug_keeps_its_traceback_and_debug_mode_keeps_the_users_too(monkeypatch):
    def bug():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run(bug)

    def mistake():
        raise CheckpointError("not a checkpoint")

    monkeypatch.setenv("SWIN_FLAX_DEBUG", "1")
    assert cli.debugging()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        cli.run(mistake)


@pytest.mark.parametrize(
    "absl, ours",
    [
        (
            "flag --config.finetune.batch_size=16.5: invalid literal for int() with base 10: "
            "'16.5'",
            "--config.finetune.batch_size: an int was expected, got 16.5",
        ),
        (
            "flag --config.distill.peak_lr=1e-3x: could not convert string to float: '1e-3x'",
            "--config.distill.peak_lr: a number was expected, got 1e-3x",
        ),
        ("flag --workdir: some other problem", "flag --workdir: some other problem"),
    ],
)
def test_a_flag_of_the_wrong_type_says_what_was_expected(absl, ours):
    assert cli.flag_error_message(absl) == ours
