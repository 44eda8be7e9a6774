"""Statistics over seeds (`swin_flax.pipeline.summaries`): mean and sample std, the gain
over the same model trained from scratch with its standard error, one summary per variant."""

import math

import pytest

from swin_flax.pipeline import report, summaries
from tests.helpers import result_row as row


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
        row("t (teacher)", "pretrained", False, 0, 90.0),
        row("n", "random", False, 1, 70.0),
        row("n", "random", False, 2, 72.0),
        row("n", "transfer", True, 1, 75.0),
        row("n", "transfer", True, 2, 77.0),
    ]
    for r in rows:
        r["workdir"] = "w"
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
    assert summaries.is_scratch(("swin_n", "random", False))
    assert not summaries.is_scratch(("swin_n", "random", True))  # distilled
    assert not summaries.is_scratch(("swin_t (teacher)", "random", False))
    assert summaries.row_variant(row("n", "transfer", 1, 0, 70.0)) == ("n", "transfer", True)
    with pytest.raises(ValueError, match="no values"):
        summaries.mean_std([])
