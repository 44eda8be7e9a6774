"""configs/*.py: typed ':arg' arguments (configs/common.py parse_args) and every command the
config files document."""

import importlib
import re
from pathlib import Path

import pytest

from configs import cifar10, common, demo, paper_tables, swin_m_kd, teacher_finetune
from swin_flax.errors import UserInputError
from swin_flax.settings import RunSettings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMAND = re.compile(r"--config[ =]configs/(\w+)\.py(?::(\S+))?")


def documented_commands() -> list[tuple[str, str | None]]:
    """(config module, ':arg' or None) of every `--config configs/x.py:arg` in a docstring."""
    found = []
    for path in sorted(CONFIGS.glob("*.py")):
        doc = importlib.import_module(f"configs.{path.stem}").__doc__ or ""
        found += COMMAND.findall(doc)
    return [(module, arg or None) for module, arg in found]


def test_every_config_documents_its_commands():
    modules = {module for module, _ in documented_commands()}
    expected = {p.stem for p in CONFIGS.glob("*.py")} - {"__init__", "common"}
    assert modules == expected


@pytest.mark.parametrize("module, arg", documented_commands())
def test_each_documented_argument_string_parses_into_valid_settings(module, arg):
    config = importlib.import_module(f"configs.{module}").get_config(arg)
    RunSettings.from_config(config)  # every key declared, every value in range


@pytest.mark.parametrize(
    "arg, message",
    [
        ("student=nm", "student must be one of n, m, got 'nm'"),  # was a substring test
        ("student=", "student must be one of n, m, got ''"),
        ("students=m", "unknown config argument 'students' (did you mean 'student'?)"),
        (
            "budget=tpu,student=x",  # every problem in the one error
            "budget must be one of cpu, gpu, got 'tpu' (did you mean 'gpu'?); student must be",
        ),
        ("student", "student needs a value (student=n|m), got it alone"),
        ("student=m,student=n", "student is given twice"),
        ("smoke=maybe", "smoke must be true or false (or the name alone), got 'maybe'"),
    ],
)
def test_cifar10_arguments_are_checked_by_their_declared_type(arg, message):
    with pytest.raises(UserInputError) as info:
        cifar10.get_config(arg)
    assert message in str(info.value)
    assert str(info.value).startswith(f"bad config argument in ':{arg}': ")
    assert "accepts: source=folder|tfds, budget=cpu|gpu, student=n|m, root=TEXT, smoke" in str(
        info.value
    )


def test_cifar10_typed_values_and_defaults():
    default = cifar10.get_config()
    assert (default.data.source, default.student.model) == ("image_folder", "cifar_swin_n_p4")
    assert default.data.root == "" and default.data.train_subset == 10_000
    gpu = cifar10.get_config("source=tfds,budget=gpu,student=m,root=/data/c10")
    assert (gpu.data.source, gpu.student.model, gpu.data.root) == (
        "tfds",
        "cifar_swin_m",
        "/data/c10",
    )
    assert gpu.data.train_subset == 0 and gpu.distill.epochs == 60
    assert cifar10.get_config("smoke=false").data.train_subset == 10_000
    assert cifar10.get_config("smoke").data.train_subset == 200


@pytest.mark.parametrize(
    "arg, message",
    [
        ("table=IV,alpha=abc", "alpha must be a finite number, got 'abc'"),
        ("table=VII,w_d=inf", "w_d must be a finite number, got 'inf'"),
        ("table=VI,interval=0-x", "interval must be two numbers such as 0-0.5, got '0-x'"),
        ("table=VI,interval=0.5", "interval must be two numbers such as 0-0.5, got '0.5'"),
        ("table=XX", "table must be one of II, IV, V, VI, VII, VIII, IX, got 'XX'"),
        ("table=IV,teacher=swin_x", "teacher must be one of swin_t, swin_s, swin_b"),
        ("student=swin_mm", "student must be a model preset name, got 'swin_mm' (did you mean"),
    ],
)
def test_paper_table_arguments_are_checked_by_their_declared_type(arg, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        paper_tables.get_config(arg)


def test_paper_table_typed_values():
    assert paper_tables.get_config("table=iv,alpha=0.5").distill.alpha == 0.5  # any case
    vi = paper_tables.get_config("table=VI,interval=0.25-0.75")
    assert (vi.distill.alpha_start, vi.distill.alpha_end, vi.sweep) == (0.25, 0.75, "")
    whole = paper_tables.get_config("table=VI")  # the default interval, and every row swept
    assert (whole.distill.alpha_start, whole.distill.alpha_end) == (0.0, 0.5)
    assert whole.sweep.count(";") == 3
    assert paper_tables.get_config("table=VII").student.model == "swin_n"
    assert paper_tables.get_config("table=II,student=swin_n").student.model == "swin_n"


def test_teacher_finetune_takes_the_teacher_alone_or_by_name():
    assert teacher_finetune.get_config("swin_b").teacher.init.endswith(
        "swin_base_patch4_window7_224.ms_in1k"
    )
    assert teacher_finetune.get_config("teacher=swin_s").teacher.model == "swin_s"
    assert teacher_finetune.get_config().teacher.model == "swin_t"
    with pytest.raises(UserInputError, match="teacher is given twice"):
        teacher_finetune.get_config("swin_b,swin_t")
    with pytest.raises(UserInputError, match="unknown config argument 'swin_q'"):
        teacher_finetune.get_config("swin_q")


def test_configs_without_arguments_refuse_every_argument():
    for module in (demo, swin_m_kd):
        with pytest.raises(UserInputError, match="unknown config argument 'smok'.*accepts: smoke$"):
            module.get_config("smok")
        assert module.get_config("smoke").loop.progress_bar is False


def test_parse_args_returns_typed_values_and_what_was_given():
    args = common.parse_args(
        " mode=b , n=2.5,flag ",
        mode=common.choice("a", "b"),
        n=common.number(1.0),
        name=common.text("x"),
        flag=common.flag(),
    )
    assert (args.mode, args.n, args.name, args.flag) == ("b", 2.5, "x", True)
    assert args.given("n") and not args.given("name")
    empty = common.parse_args(None, mode=common.choice("a", "b"), flag=common.flag())
    assert (empty.mode, empty.flag) == ("a", False)
    with pytest.raises(TypeError, match="given"):
        common.parse_args("", given=common.flag())


# --- moved from tests/pipeline/test_run.py (issue 17): the config files themselves ---


def test_unknown_keys_in_a_config_file_are_rejected():
    config = common.get_base_config()
    with pytest.raises(AttributeError, match=r'Did you mean "w_d" instead of "w_dd"'):
        config.distill.w_dd = 3  # the base config is locked: a config file's typo fails
    values = config.to_dict()
    values["distill"]["w_dd"] = 3  # a config that bypassed the lock (a plain dict)
    with pytest.raises(UserInputError, match=r"distill.w_dd \(did you mean distill.w_d\?\)"):
        RunSettings.from_config(values)


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


def test_demo_config_is_the_default_and_offline():
    config = demo.get_config()
    assert config.data.source == "digits" and config.teacher.init == "random"
    assert config.runs == "random,random+kd,transfer,transfer+kd"
