"""The report of finished runs (`swin_flax.pipeline.report`): work directories merged,
summary.md with its table and plots, and the CLI. The statistics are in test_summaries.py."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from swin_flax import cli
from swin_flax.errors import UserInputError
from swin_flax.pipeline import report, summaries
from tests.helpers import result_row as row

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_workdir(path: Path, rows, curves=None) -> Path:
    """A fake finished work directory; `curves`: stage -> [(epoch, eval_top1)]."""
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(rows))
    for stage, points in (curves or {}).items():
        (path / stage).mkdir()
        lines = []
        for epoch, top1 in points:  # interleaved training and evaluation lines
            lines.append(json.dumps({"step": epoch * 10, "epoch": epoch, "loss": 1.0 / epoch}))
            lines.append(json.dumps({"step": epoch * 10, "epoch": epoch, "eval_top1": top1}))
        (path / stage / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 9')
    return path


def test_two_workdirs_merge_into_one_table_with_n_summed(tmp_path):
    a = make_workdir(
        tmp_path / "a", [row("n", "random", False, 1, 70.0), row("n", "transfer", True, 1, 75.0)]
    )
    b = make_workdir(
        tmp_path / "b",
        [
            row("n", "random", False, 2, 72.0),
            row("n", "random", False, 3, 74.0),
            row("n", "transfer", True, 2, 77.0),
        ],
    )
    rows, notes = report.merge_rows([a, b])
    scratch, kd = summaries.summarize(rows)
    assert (scratch.n, scratch.mean, scratch.std, scratch.seeds) == (3, 72.0, 2.0, (1, 2, 3))
    assert (kd.n, kd.mean) == (2, 76.0)
    assert notes == []
    summary = report.write_report([a, b], tmp_path / "out").read_text()
    assert f"`{a}`, `{b}`" in summary
    assert "| n | random | no | 72.00 ± 2.00 | 3 | (scratch) |" in summary


def test_a_duplicate_variant_and_seed_is_warned_and_kept_once(tmp_path, capsys):
    a = make_workdir(tmp_path / "a", [row("n", "random", False, 1, 70.0)])
    b = make_workdir(
        tmp_path / "b", [row("n", "random", False, 1, 99.0), row("n", "random", False, 2, 72.0)]
    )
    rows, notes = report.merge_rows([a, b])
    assert [r.top1 for r in rows] == [70.0, 72.0]  # the first one read is kept
    assert len(notes) == 1 and str(a) in notes[0]
    assert capsys.readouterr().err == f"warning: {notes[0]}\n"


def test_a_duplicate_in_a_runs_own_report_is_one_warning_line_not_a_python_warning(
    tmp_path, capsys
):
    w = make_workdir(
        tmp_path / "w", [row("n", "random", False, 0, 70.0), row("n", "random", False, 0, 71.0)]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.write_report([w], w)  # as run_pipeline writes it: no CLI around it
    assert [str(c.message) for c in caught if "seed" in str(c.message)] == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "seed 0" in err[0]


def test_noisy_throughput_is_flagged_in_the_table(tmp_path):
    w = make_workdir(
        tmp_path / "w",
        [
            row("n", "random", False, 1, 70.0, ips=1234.4, noisy=True, device="TFRT_CPU_0"),
            row("m", "random", False, 1, 60.0, ips=500.0),
        ],
    )
    summary = report.write_report([w], w).read_text()
    assert "~1234 (noisy) (TFRT_CPU_0)" in summary
    assert "| 500 (cpu) |" in summary


def test_a_run_without_eval_lines_or_throughput_gets_notes_instead_of_plots(tmp_path):
    w = make_workdir(tmp_path / "w", [row("n", "random", False, 1, 70.0)])
    summary = report.write_report([w], w).read_text()
    assert "No per-epoch plot" in summary and "No throughput plot" in summary
    assert sorted(p.name for p in (w / "plots").iterdir()) == ["accuracy_vs_params.png"]


def test_eval_curve_takes_the_eval_lines_and_skips_a_cut_line(tmp_path):
    w = make_workdir(tmp_path / "w", [], curves={"s": [(1, 40.0), (2, 55.5)]})
    assert report.eval_curve(w / "s" / "metrics.jsonl") == {1.0: 40.0, 2.0: 55.5}


def fake_run(tmp_path: Path) -> Path:
    rows, curves = [], {}
    for seed in (1, 2):
        for init, distill, base, params, ips in (
            ("random", False, 60.0, 900_000, 3000.0),
            ("transfer", True, 66.0, 900_000, 2900.0),
        ):
            r = row("cifar_swin_n", init, distill, seed, base + 2 * seed, params=params, ips=ips)
            rows.append(r)
            curves[r["stage"]] = [(e, base * e / 3 + seed) for e in (1, 2, 3)]
    teacher = row(
        "cifar_swin_t (teacher)",
        "pretrained",
        False,
        0,
        90.0,
        params=27_500_000,
        ips=800.0,
        noisy=True,
        stage="teacher",
    )
    curves["teacher"] = [(1, 85.0), (2, 90.0)]
    return make_workdir(tmp_path / "run", [teacher, *rows], curves)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SWIN_FLAX_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "swin_flax.pipeline.report", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_cli_writes_summary_and_three_small_pngs(tmp_path):
    w = fake_run(tmp_path)
    done = run_cli(w)
    assert done.returncode == 0, done.stderr
    summary = (w / "summary.md").read_text()
    assert "| cifar_swin_n | transfer | yes | 69.00 ± 1.41 | 2 | +6.00 ± 1.41 | yes |" in summary
    names = ("accuracy_per_epoch.png", "accuracy_vs_params.png", "accuracy_vs_throughput.png")
    sizes = []
    for name in names:
        assert f"](plots/{name})" in summary
        data = (w / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        sizes.append(len(data))
    assert sum(sizes) < 150_000


@pytest.mark.multiprocess
def test_cli_on_a_missing_dir_says_one_error_line_and_exits_2(tmp_path):
    done = run_cli(tmp_path / "nowhere")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'nowhere'} is not a directory (expected a finished work directory)"
    ]


def test_cli_errors_for_a_dir_without_results_and_several_dirs_without_out(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.run(report.main, [str(tmp_path / "empty")]) == 2
    assert "has no results.json" in capsys.readouterr().err
    a = make_workdir(tmp_path / "a", [row("n", "random", False, 1, 70.0)])
    assert cli.run(report.main, [str(a), str(a)]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="no work directory"):
        report.write_report([], tmp_path / "out")
