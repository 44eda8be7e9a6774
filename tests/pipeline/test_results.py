"""swin_flax.pipeline.results: typed result rows (results.json of any version read back,
roles never parsed from labels), the one owner of the files and tables of a work
directory (results.json, summary.md, sweep.md), one markdown table formatter, one
parameter formatter."""

import json

import numpy as np
import pytest

from swin_flax.data.dataset import ArrayDataset
from swin_flax.pipeline import report, results
from swin_flax.pipeline.results import ResultRow


def result_row(model, init, distill, seed, top1, params=1_000_000, role="student", **extra):
    return ResultRow(role, model, init, distill, seed, top1=top1, params=params, **extra)


def sweep_row(student, column, seed, top1, *, init="random", distill=True):
    return result_row(
        f"{student} [{column}]", init, distill, seed, top1, student=student, sweep_row=column
    )


def as_json(rows, **extra):
    return [{**row.to_dict(), **extra} for row in rows]


def test_rows_are_written_with_the_keys_they_always_had_and_read_back_typed(tmp_path):
    """A results.json of the code before the typed rows (da4bd3d), read and written again."""
    old = [
        {"model": "t (teacher, source task)", "init": "random", "distillation": False,
         "top1": 40.0, "task": "source", "seed": 0, "stage": "pretrain", "partial": True},
        {"model": "t (teacher)", "init": "pretrained", "distillation": False, "top1": 90.0,
         "val_top1": 91.0, "params": 27_000_000, "images_per_second": 812.5,
         "images_per_second_min": 800.0, "images_per_second_max": 820.0,
         "throughput_noisy": False, "device": "cpu", "seed": 0, "stage": "teacher"},
        {"model": "n (strong scratch)", "init": "random", "distillation": False, "top1": 70.0,
         "params": 20_000_000, "skipped_images": 2, "seed": 1, "stage": "student_random_long",
         "baseline": "strong scratch"},
        {"model": "n [alpha=0]", "init": "random", "distillation": True, "top1": 71.0,
         "params": 20_000_000, "seed": 1, "stage": "student_random_kd_alpha0",
         "student": "n", "sweep_row": "alpha=0"},
    ]  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(old))
    rows = results.read_results(tmp_path)
    assert [r.role for r in rows] == ["source-task", "teacher", "student", "student"]
    assert [r.is_scratch for r in rows] == [False, False, False, False]
    assert rows[0].partial and rows[1].throughput["images_per_second"] == 812.5
    assert (rows[3].student, rows[3].sweep_row, rows[2].baseline) == (
        "n",
        "alpha=0",
        "strong scratch",
    )
    assert [r.to_dict() for r in rows] == old  # the same keys, in the same order
    assert ResultRow("student", "n", "random", False, 0, "s", top1=1.0).is_scratch


def test_markdown_table_is_a_header_a_rule_and_one_line_per_row():
    assert results.markdown_table(["a", "b"], [["1", "x"], ["2", ""]]) == (
        "| a | b |\n|---|---|\n| 1 | x |\n| 2 |  |"
    )
    assert results.markdown_table(["a"], []) == "| a |\n|---|"


@pytest.mark.parametrize(
    "params,text",
    [(None, "–"), (0, "0"), (99_999, "99,999"), (100_000, "0.10M"), (28_288_354, "28.29M")],
)
def test_one_parameter_formatter_with_one_threshold(params, text):
    assert results.format_params(params) == text


def test_the_rows_table_shows_the_columns_any_row_has():
    rows = [
        result_row("swin_t (teacher)", "pretrained", False, 0, 90.5, 27_500_000),
        result_row(
            "swin_n",
            "transfer",
            True,
            123_456,
            75.25,
            12_345,
            throughput={"images_per_second": 812.5},
        ),
    ]
    assert results.rows_table(rows) == (
        "| model | init | distillation | seed | top1 | params | images_per_second |\n"
        "|---|---|---|---|---|---|---|\n"
        "| swin_t (teacher) | pretrained | no | 0 | 90.5 | 27.50M |  |\n"
        # a seed is no parameter count: it stays a plain number
        "| swin_n | transfer | yes | 123456 | 75.25 | 12,345 | 812.5 |"
    )


def test_the_sweep_table_has_students_down_and_sweep_rows_across():
    rows = [
        result_row("swin_t (teacher)", "pretrained", False, 0, 90.0),  # not a sweep's row
        sweep_row("swin_n", "alpha=0", 0, 70.0),
        sweep_row("swin_n", "alpha=0", 1, 72.0),
        sweep_row("swin_n", "alpha=0.5", 0, 75.0),
        sweep_row("swin_n", "alpha=0.5", 0, 71.0, init="transfer"),
    ]
    assert results.sweep_table(rows) == (
        "| student | init | distillation | alpha=0 | alpha=0.5 |\n"
        "|---|---|---|---|---|\n"
        "| swin_n | random | yes | 71.00 ± 1.41 (n=2) | 75.00 |\n"
        "| swin_n | transfer | yes |  | 71.00 |"
    )
    assert results.sweep_table(rows[:1]) == "" and results.sweep_section(rows[:1], "") == ""
    assert results.sweep_section(rows, "alpha=0,0.5").startswith(
        "## Sweep: alpha=0,0.5\n\ntop-1 (%)\n\n| student |"
    )


def test_write_results_writes_results_summary_and_for_a_sweep_sweep_md(tmp_path):
    plain = [result_row("swin_n", "random", False, 0, 70.0)]
    results.write_results(tmp_path, plain)
    assert json.loads((tmp_path / "results.json").read_text()) == as_json(plain)
    assert (tmp_path / "summary.md").read_text() == results.rows_table(plain) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "summary.md"]

    swept = [sweep_row("swin_n", "alpha=0", 0, 70.0)]
    results.write_results(tmp_path, swept, "alpha=0")
    assert (tmp_path / "summary.md").read_text() == results.rows_table(swept) + "\n"
    assert (tmp_path / "sweep.md").read_text() == (
        "## Sweep: alpha=0\n\ntop-1 (%)\n\n" + results.sweep_table(swept) + "\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "summary.md", "sweep.md"]


def test_write_summary_joins_the_sections_with_a_blank_line(tmp_path):
    path = results.write_summary(tmp_path, "# Results\n", "", "## Sweep: x\n\ntable")
    assert path == tmp_path / "summary.md"
    assert path.read_text() == "# Results\n\n## Sweep: x\n\ntable\n"


def test_the_report_writes_summary_md_through_results_with_the_sweep_after_it(tmp_path):
    rows = [sweep_row("swin_n", "alpha=0", 0, 70.0), sweep_row("swin_n", "alpha=0.5", 0, 74.0)]
    results.write_results(tmp_path, rows, "alpha=0,0.5")
    alone = report.write_report([tmp_path], tmp_path).read_text()
    section = results.sweep_section(rows, "alpha=0,0.5")
    summary = report.write_report([tmp_path], tmp_path, after=[section]).read_text()
    assert summary == alone + "\n" + section + "\n"
    assert summary.endswith((tmp_path / "sweep.md").read_text())
    assert "| swin_n [alpha=0] | random | yes | 70.00 ± – | 1 |" in summary
    assert "| 1.00M |" in summary  # the report's parameter counts: format_params


def test_record_skipped_images_lists_them_once_sorted(tmp_path, capsys):
    def dataset(skipped):
        return ArrayDataset(
            np.zeros((1, 2, 2, 3), np.uint8), np.zeros(1, np.int32), 1, skipped_files=skipped
        )

    results.record_skipped_images(tmp_path, dataset(("b.jpg", "a.jpg")), dataset(("a.jpg",)))
    assert (tmp_path / "skipped_images.txt").read_text() == "a.jpg\nb.jpg\n"
    assert "note: 2 unreadable images skipped" in capsys.readouterr().err
    results.record_skipped_images(tmp_path / "none", dataset(()))  # nothing to record
    assert not (tmp_path / "none").exists()


def test_results_written_during_the_run_are_marked_partial_until_its_end(tmp_path):
    rows = [result_row("swin_n", "random", False, 0, 70.0)]
    results.write_results(tmp_path, rows, partial=True)  # a stage finished, more to come
    assert json.loads((tmp_path / "results.json").read_text()) == as_json(rows, partial=True)
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith(results.rows_table(rows)) and "partial" not in results.rows_table(
        rows
    )
    assert summary.endswith(f"\n\n{results.PARTIAL_NOTE}\n")
    results.write_results(tmp_path, rows)  # the run's end: the same rows, complete
    assert json.loads((tmp_path / "results.json").read_text()) == as_json(rows)
    assert (tmp_path / "summary.md").read_text() == results.rows_table(rows) + "\n"


def test_the_report_of_a_partial_results_file_says_so(tmp_path):
    rows = [result_row("swin_n", "random", False, 0, 70.0)]
    results.write_results(tmp_path, rows, partial=True)
    summary = report.write_report([tmp_path], tmp_path).read_text()
    assert f"Note: {tmp_path / 'results.json'} is partial" in summary
    results.write_results(tmp_path, rows)
    assert "is partial" not in report.write_report([tmp_path], tmp_path).read_text()


def test_a_full_disk_while_writing_the_results_is_one_error_naming_results_json(
    tmp_path, monkeypatch
):
    import errno

    from swin_flax import _files

    rows = [result_row("swin_n", "random", False, 0, 70.0)]
    results.write_results(tmp_path, rows)

    def no_space(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files, "_fsync_file", no_space)
    with pytest.raises(_files.DiskFullError, match=r"while writing .*results.json; its previous"):
        results.write_results(tmp_path, rows * 2)
    assert json.loads((tmp_path / "results.json").read_text()) == as_json(rows)
