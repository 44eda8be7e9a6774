"""swin_flax/pipeline/regime.py: the warning when the transferred student already beats its
teacher, and the recommended student, both on validation scores."""

import pytest

from swin_flax.pipeline import regime


def test_a_transfer_student_at_or_above_its_teacher_warns():
    text = regime.regime_warning(71.0, 72.5, stage="student_transfer_seed0")
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
    assert regime.regime_warning(72.5, 72.5, stage="s") is not None  # a tie: KD cannot lift it


def test_a_teacher_above_its_transfer_student_is_the_papers_regime_and_does_not_warn():
    assert regime.regime_warning(80.0, 75.0, stage="student_transfer") is None


def row(model, init, kd, seed, val, test):
    return {
        "model": model,
        "init": init,
        "distillation": kd,
        "seed": seed,
        "val_top1": val,
        "top1": test,
    }


def test_the_recommendation_is_the_best_mean_validation_score_never_the_teachers():
    rows = [
        row("swin_t (teacher)", "pretrained", False, 0, 99.0, 99.0),
        row("swin_n", "transfer", False, 0, 80.0, 70.0),
        row("swin_n", "transfer", False, 1, 82.0, 71.0),
        row("swin_n", "transfer", True, 0, 79.0, 90.0),  # best on test: not chosen on test
        row("swin_n", "transfer", True, 1, 80.0, 91.0),
        row("swin_n (strong scratch)", "random", False, 0, 60.0, 60.0),
    ]
    best = regime.recommendation(rows)
    assert best["variant"] == "swin_n transfer" and best["n"] == 2
    assert best["val"] == (81.0, pytest.approx(1.4142, abs=1e-4))
    assert best["test"][0] == 70.5
    section = regime.recommendation_section(rows)
    assert section.startswith("## Recommended\n\n**swin_n transfer**: the best mean validation")
    assert "(81.00 ± 1.41 %, n = 2)" in section and "test top-1 70.50 ± 0.71 %" in section


def test_without_validation_scores_nothing_is_recommended():
    rows = [{"model": "swin_n", "init": "random", "distillation": False, "top1": 50.0}]
    assert regime.recommendation(rows) is None and regime.recommendation_section(rows) == ""


@pytest.mark.parametrize(
    "label, student",
    [
        ("swin_t (teacher)", False),
        ("swin_t (teacher, source task)", False),
        ("swin_n (strong scratch)", True),
        ("swin_n", True),
        ("swin_n [alpha=0.5]", True),
    ],
)
def test_teachers_are_not_students(label, student):
    assert regime.is_student({"model": label}) is student
