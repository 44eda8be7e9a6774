"""results/experiments/: the scripts that turn runs into the results pages. The candidate
table compares on validation (what may choose), from seed values or from a page's rows."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "results/experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


candidates = load("candidates_table")


def test_the_summary_comparison_is_the_difference_of_means_with_its_standard_error():
    """Setting A's KL at T=4 against transfer alone on validation (issue 29: +0.53 ± 0.48)."""
    gain, spread, beyond = candidates.gain_from_summary(59.13, 0.15, 3, 58.60, 0.82, 3)
    assert gain == pytest.approx(0.53)
    assert spread == pytest.approx((0.15**2 / 3 + 0.82**2 / 3) ** 0.5)
    assert round(spread, 2) == 0.48 and beyond is False
    assert candidates.gain_from_summary(77.00, 0.33, 3, 79.67, 0.88, 3)[2] is True  # -2.67
    assert candidates.gain_from_summary(80.0, None, 1, 79.67, 0.88, 3)[1:] == (None, None)


def test_the_seed_table_compares_on_validation(tmp_path):
    rows = [
        {"model": "s", "init": "transfer", "distillation": False, "top1": t, "val_top1": v}
        for t, v in ((60.0, 58.0), (61.0, 59.0))
    ] + [
        {"model": "s", "init": "transfer", "distillation": True, "top1": t, "val_top1": v}
        for t, v in ((70.0, 57.0), (71.0, 58.0))  # far better on test, worse on validation
    ]
    path = tmp_path / "results.json"
    path.write_text(__import__("json").dumps(rows))
    lines = candidates.table([path]).splitlines()
    assert lines[0].split("|")[5].strip() == "vs transfer (val)"
    assert "| -1.00 ± 0.71 (within the spread) | 70.50 ± 0.71 |" in lines[3]


def test_the_pages_validation_columns_are_what_the_page_states():
    """Recomputed from each row's printed mean ± std and n, the decision columns of the
    results pages agree with the numbers written in them."""
    for page in ("pretrained.md", "blocks.md"):
        text = (ROOT / "results" / page).read_text()
        for label, comparison in candidates.page_comparisons(text):
            if "no spread" in comparison:
                continue  # the teacher's row (n = 1)
            assert comparison.split(" (")[0] in text, (page, label, comparison)
    found = dict(candidates.page_comparisons((ROOT / "results/pretrained.md").read_text()))
    kl = "transfer | KD: joint=arithmetic, alpha=0.5, distillation=kl, temperature=4"
    assert found[kl] == "+0.53 ± 0.48 (within the spread)"  # setting A, the last table
