"""Statistics over seeds (`swin_flax.pipeline.summaries`): mean and sample std, the gain
over the same model trained from scratch with its standard error, one summary per variant;
the recommended student, chosen on validation scores."""

import math

import pytest

from swin_flax.pipeline import report, summaries
from swin_flax.pipeline.results import ResultRow
from tests.helpers import result_row


def row(*args, **kwargs) -> ResultRow:
    return ResultRow.from_dict(result_row(*args, **kwargs), workdir="w")


def test_mean_and_sample_std_of_known_values():
    assert summaries.mean_std([70, 72, 74]) == (72.0, 2.0)
    assert summaries.mean_std([70.0]) == (70.0, None)


def test_gain_is_the_difference_of_means_with_the_standard_error_as_spread():
    gain, spread, beyond = summaries.gain_over([75, 77], [70, 72])
    assert gain == 5.0
    # s1 = s2 = sqrt(2), n1 = n2 = 2: sqrt(2/2 + 2/2) = sqrt(2)
    assert spread == pytest.approx(math.sqrt(2.0))
    assert beyond is True  # 5 > 2 * 1.414
    gain, spread, beyond = summaries.gain_over([71, 75], [70, 72])
    assert (gain, beyond) == (2.0, False)  # spread sqrt(8/2 + 2/2) = 2.236; 2 < 4.47
    assert spread == pytest.approx(math.sqrt(5.0))
    assert summaries.gain_over([75], [70, 72]) == (4.0, None, None)


def test_summary_rows_gain_over_scratch_of_the_same_model():
    rows = [
        row("t (teacher)", "pretrained", False, 0, 90.0, stage="teacher"),
        row("n", "random", False, 1, 70.0),
        row("n", "random", False, 2, 72.0),
        row("n", "transfer", True, 1, 75.0),
        row("n", "transfer", True, 2, 77.0),
    ]
    teacher, scratch, kd = summaries.summarize(rows)
    assert (teacher.gain, scratch.is_scratch, scratch.gain) == (None, True, None)
    assert (kd.n, kd.mean, kd.gain, kd.beyond_spread) == (2, 76.0, 5.0, True)
    cells = report.table_cells(kd)
    assert cells[3:7] == ["76.00 ± 1.41", "2", "+5.00 ± 1.41", "yes"]
    assert report.table_cells(teacher)[3:7] == ["90.00 ± –", "1", "–", "–"]
    assert report.table_cells(scratch)[5] == "(scratch)"


def test_variants_are_labelled_and_only_students_on_labels_alone_are_scratch():
    assert summaries.variant_label(("swin_n", "transfer", True)) == "swin_n transfer +KD"
    assert summaries.variant_label(("swin_n", "random", False)) == "swin_n random"
    assert row("swin_n", "random", False, 0, 70.0).is_scratch
    assert not row("swin_n", "random", True, 0, 70.0).is_scratch  # distilled
    assert not row("swin_t (teacher)", "random", False, 0, 70.0, stage="teacher").is_scratch
    strong = ResultRow.from_dict(
        {**result_row("n", "random", False, 0, 1.0), "baseline": "strong scratch"}
    )
    assert not strong.is_scratch
    assert row("n", "transfer", 1, 0, 70.0).variant == ("n", "transfer", True)
    with pytest.raises(ValueError, match="no values"):
        summaries.mean_std([])


def recommended_row(model, init, kd, seed, val, test, role="student"):
    return ResultRow(role, model, init, kd, seed, "s", top1=test, val_top1=val)


def test_the_recommendation_is_the_best_mean_validation_score_never_the_teachers():
    rows = [
        recommended_row("swin_t (teacher)", "pretrained", False, 0, 99.0, 99.0, role="teacher"),
        recommended_row(
            "swin_t (teacher, source task)", "random", False, 0, 99.5, 99.5, "source-task"
        ),
        recommended_row("swin_n", "transfer", False, 0, 80.0, 70.0),
        recommended_row("swin_n", "transfer", False, 1, 82.0, 71.0),
        recommended_row("swin_n", "transfer", True, 0, 79.0, 90.0),  # best on test: not chosen
        recommended_row("swin_n", "transfer", True, 1, 80.0, 91.0),
        recommended_row("swin_n (strong scratch)", "random", False, 0, 60.0, 60.0),
    ]
    best = summaries.recommendation(rows)
    assert best["variant"] == "swin_n transfer" and best["n"] == 2
    assert best["val"] == (81.0, pytest.approx(1.4142, abs=1e-4))
    assert best["test"][0] == 70.5
    section = summaries.recommendation_section(rows)
    assert section.startswith("## Recommended\n\n**swin_n transfer**: the best mean validation")
    assert "(81.00 ± 1.41 %, n = 2)" in section and "test top-1 70.50 ± 0.71 %" in section
    # the strong scratch baseline is a student a user may keep
    assert summaries.recommendation([rows[0], rows[-1]])["variant"] == (
        "swin_n (strong scratch) random"
    )


def test_without_validation_scores_nothing_is_recommended():
    rows = [ResultRow("student", "swin_n", "random", False, 0, "s", top1=50.0)]
    assert summaries.recommendation(rows) is None and summaries.recommendation_section(rows) == ""
