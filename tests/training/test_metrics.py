"""Where a stage's metrics go (`swin_flax.training.metrics`): JSON lines that a resumed run
continues without repeating a step, TensorBoard events, and the progress bar."""

import errno
import json
import re

import pytest

from swin_flax._files import DiskFullError
from swin_flax.training.metrics import MetricsWriter, ProgressBar
from tests.test_files import small_disk


def logged_steps(directory) -> list[int]:
    return [json.loads(line)["step"] for line in (directory / "metrics.jsonl").open()]


def test_lines_are_json_with_the_step_first_and_float_values(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(2, {"loss": 1.5, "accuracy": 1})
    writer.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    assert line == '{"step": 2, "loss": 1.5, "accuracy": 1.0}\n'


def test_a_resumed_writer_drops_what_came_after_the_checkpoint_and_a_cut_line(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    for step in (2, 4, 6):
        writer.write(step, {"loss": 10.0 - step, "epoch": step / 4})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "lo')  # what a kill in the middle of a write leaves

    resumed = MetricsWriter(tmp_path, resume_step=4, tensorboard=False)
    assert resumed.last_logged == {"loss": 6.0, "epoch": 1.0}  # step 4's line, without "step"
    resumed.write(6, {"loss": 3.0})
    resumed.close()
    assert logged_steps(tmp_path) == [2, 4, 6]  # step 6 once: the resumed run's


def test_tensorboard_events_are_written_beside_the_json_lines(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(1, {"loss": 2.0})
    writer.flush()
    writer.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_the_progress_bar_follows_the_steps_and_shows_epoch_and_loss():
    bar = ProgressBar("stage", total_steps=10, initial_step=2, steps_per_epoch=4, batch_size=8)
    bar.update(6, {"loss": 0.25})
    assert bar._bar.n == 6 and bar._bar.total == 10
    shown = dict(item.split("=") for item in bar._bar.postfix.split(", "))
    assert (shown["epoch"], shown["loss"]) == ("1.50", "0.2500") and float(shown["img_s"]) > 0
    bar.close()


def fill(disk) -> None:
    """Take every free byte of `disk` with one file."""
    with open(disk / "ballast", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def test_a_full_disk_while_logging_is_one_error_naming_the_step_and_what_is_kept(tmp_path):
    with small_disk(tmp_path) as disk:
        writer = MetricsWriter(disk / "stage", tensorboard=False)
        writer.write(1, {"loss": 1.0})
        fill(disk)
        with pytest.raises(DiskFullError) as caught:
            for step in range(2, 100_000):  # the first page of the file still has room
                writer.write(step, {"loss": 0.5})
        writer.close()  # once failed, closing adds no second error
        path = disk / "stage" / "metrics.jsonl"
        match = re.fullmatch(
            rf"no space left on {disk} while logging step (\d+) to {path}; it keeps the "
            r"lines up to step (\d+); free space and rerun",
            str(caught.value),
        )
        assert match and int(match[2]) == int(match[1]) - 1 > 1
        kept = int(match[2])
        lines = path.read_text().splitlines()[:kept]  # a part of the next one may follow them
        assert [json.loads(line)["step"] for line in lines] == list(range(1, kept + 1))


def test_a_full_disk_while_flushing_the_metrics_is_the_same_one_error(tmp_path, monkeypatch):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(4, {"loss": 1.0})

    def no_space():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer._jsonl, "flush", no_space, raising=False)
    with pytest.raises(DiskFullError, match=r"while logging step 4 to .*up to step 4; free"):
        writer.flush()
    writer.close()


@pytest.mark.parametrize("enabled", [False, True])
def test_once_its_first_steps_are_timed_a_stage_says_how_long_it_will_take(
    monkeypatch, capsys, enabled
):
    from swin_flax.training import metrics

    clock = iter([0.0, 40.0, 45.0, 50.0])  # start; step 50 (with compiling); 100; 150
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    bar = ProgressBar(
        "fine-tune teacher", 1000, 0, steps_per_epoch=50, batch_size=8, enabled=enabled
    )
    for step in (50, 100, 150):
        bar.update(step, {"loss": 1.0})
    bar.close()
    assert capsys.readouterr().out.splitlines() == [
        "fine-tune teacher: 0.1 s per step (timed over steps 50-100): about 1.5 min for the "
        "900 steps left"
    ]


@pytest.mark.parametrize(
    "seconds, text",
    [(59, "59 s"), (89 * 60, "89 min"), (3 * 3600, "3.0 h"), (5 * 86400, "5.0 days")],
)
def test_durations_read_in_the_unit_that_fits(seconds, text):
    from swin_flax.training import metrics

    assert metrics.describe_duration(seconds) == text
