"""What a config compares (`swin_flax.pipeline.sweeps`): the student variants, INIT or
INIT+kd parsed in order; and --config.sweep, the rows of one paper table in one workdir,
each its own resumable stage, reading the teacher's logits recorded once."""

import json

import pytest

import swin_flax
from configs import paper_tables
from swin_flax.errors import UserInputError
from swin_flax.pipeline.run import run_pipeline
from swin_flax.pipeline.sweeps import StudentVariant, parse_variant, parse_variants, sweep_rows
from swin_flax.settings import RunSettings
from tests.helpers import assert_trees_equal, demo_config, random_teacher


@pytest.mark.parametrize(
    "text, init, distill, name",
    [
        ("random", "random", False, "random"),
        ("random+kd", "random", True, "random_kd"),
        (" transfer ", "transfer", False, "transfer"),
        ("transfer+kd", "transfer", True, "transfer_kd"),
    ],
)
def test_a_variant_is_an_init_and_whether_it_distils(text, init, distill, name):
    variant = parse_variant(text)
    assert variant == StudentVariant(init=init, distill=distill)
    assert variant.name == name and variant.transfer == (init == "transfer")


@pytest.mark.parametrize("text", ["pretrained", "transfer+KD", "random+kd+kd", ""])
def test_an_unknown_variant_lists_the_four_known_ones(text):
    with pytest.raises(UserInputError, match="expected one of random, random\\+kd, transfer"):
        parse_variant(text)


def test_variants_keep_their_order_skip_blanks_and_must_not_repeat():
    assert [v.name for v in parse_variants("transfer+kd, random,")] == ["transfer_kd", "random"]
    assert parse_variants("") == []  # the teacher alone
    with pytest.raises(UserInputError, match="student variants repeat"):
        parse_variants("random,transfer,random")


def test_the_strong_scratch_baseline_is_random_init_labels_only_and_long():
    variant = parse_variant("random+long")
    assert variant == StudentVariant(init="random", distill=False, long=True)
    assert variant.name == "random_long" and variant.spelling == "random+long"
    assert not variant.transfer
    with pytest.raises(UserInputError, match="random\\+long"):
        parse_variant("transfer+long")


def rows_of(sweep):
    return sweep_rows(sweep)


def test_sweep_syntax_names_and_errors():
    rows = rows_of("alpha=0,0.25")
    assert [(r.name, r.column) for r in rows] == [
        ("alpha0", "alpha=0"),
        ("alpha0.25", "alpha=0.25"),
    ]
    assert rows[1].sections() == {"distill": {"alpha": 0.25}}
    two = rows_of("student.model=swin_n,w_d=1; student.model=swin_n,w_d=13")
    assert [r.name for r in two] == ["w_d1", "w_d13"]
    assert two[0].sections() == {"student": {"model": "swin_n"}, "distill": {"w_d": 1.0}}
    assert rows_of("") == rows_of("  ") and rows_of("")[0].name == ""
    with pytest.raises(UserInputError) as info:
        rows_of("alpah=0; teacher.model=swin_s,alpha=x; alpha=2")
    message = str(info.value)
    assert "did you mean distill.alpha" in message and "teacher.model" in message
    assert "alpha='x' is not a float" in message  # a value's range: test_plan.py
    with pytest.raises(UserInputError, match="repeat"):
        rows_of("alpha=0,0")


def test_whole_tables_are_sweeps_and_rows_stay_single_runs():
    assert paper_tables.get_config("table=IV,smoke").sweep == "alpha=0,0.25,0.5,0.75"
    assert len(sweep_rows(RunSettings.from_config(paper_tables.get_config("table=IV")).sweep)) == 8
    assert paper_tables.get_config("table=VI").sweep.count(";") == 3
    assert paper_tables.get_config("table=VII").sweep == "w_d=1,5,13,20"
    for row in ("table=IV,alpha=0.5", "table=VI,interval=0-1", "table=VII,w_d=5", "table=IX"):
        assert paper_tables.get_config(row).sweep == ""


@pytest.mark.slow
def test_a_sweep_resumed_in_the_middle_of_a_row_equals_an_uninterrupted_one(tmp_path, capsys):
    teacher = random_teacher(tmp_path / "teacher")

    def config(sweep, **loop):
        c = demo_config(teacher, joint="arithmetic")
        c.runs, c.sweep = "random+kd", sweep
        for key, value in loop.items():
            setattr(c.loop, key, value)
        return c

    work = tmp_path / "sweep"
    # The whole table; its first row records the teacher's logits (two rows share them)
    # and stops after step 5 (checkpoint at 4), as a kill would.
    assert run_pipeline(config("alpha=0,0.5", stop_after_steps=5), work) == []
    assert "student_random_kd_alpha0 at step 5" in capsys.readouterr().out
    rows = run_pipeline(config("alpha=0,0.5"), work)
    out = capsys.readouterr().out
    # Row alpha0 resumes at step 4: step 5 was recorded before the stop, 6-8 now; row
    # alpha0.5 runs no teacher at all.
    assert "teacher logits: 1 steps read from" in out and "3 run live and recorded" in out
    assert "teacher logits: 8 steps read from" in out and "0 run live and recorded" in out
    assert [(r["stage"], r["sweep_row"]) for r in rows] == [
        ("student_random_kd_alpha0", "alpha=0"),
        ("student_random_kd_alpha0.5", "alpha=0.5"),
    ]
    assert rows[1]["model"] == "swin_micro_n [alpha=0.5]"
    summary = (work / "summary.md").read_text()
    assert summary.endswith((work / "sweep.md").read_text())
    assert "| student | init | distillation | alpha=0 | alpha=0.5 |" in summary
    assert (
        f"| swin_micro_n | random | yes | {rows[0]['top1']:.2f} | {rows[1]['top1']:.2f} |"
        in summary
    )

    reference = tmp_path / "reference"  # the row alone, live, uninterrupted
    c = config("alpha=0")
    c.distill.teacher_logits = "live"
    run_pipeline(c, reference)
    assert not (reference / "teacher_logits").exists()
    _, a = swin_flax.load_checkpoint(work / "student_random_kd_alpha0" / "final_model")
    _, b = swin_flax.load_checkpoint(reference / "student_random_kd_alpha0" / "final_model")
    assert_trees_equal(a, b)
    assert json.loads((reference / "results.json").read_text())[0]["top1"] == rows[0]["top1"]


def test_every_sweep_row_gets_the_base_settings_checks_before_anything_trains(tmp_path):
    """A row's own settings go through every pre-flight check the base settings do: its
    epochs against the 5 warmup epochs, its batch against the data, before the teacher."""
    from configs import demo

    config = demo.get_config("smoke")
    config.runs = "random"
    config.distill.epochs, config.distill.warmup_epochs = 60.0, 5.0
    config.sweep = "epochs=3,60"
    with pytest.raises(
        UserInputError,
        match=r"sweep row 'epochs3': distill.warmup_epochs \(5.0\) must be shorter than "
        r"distill.epochs \(3.0\)",
    ):
        run_pipeline(config, tmp_path / "epochs")
    assert not (tmp_path / "epochs" / "teacher").exists()

    config.distill.epochs, config.distill.warmup_epochs = 1.0, 0.5
    config.sweep = "batch_size=8,100000"
    with pytest.raises(
        UserInputError,
        match=r"sweep row 'batch_size100000': distill.batch_size 100000 is larger than the "
        r"training set",
    ):
        run_pipeline(config, tmp_path / "batch")
    assert not (tmp_path / "batch" / "teacher").exists()
