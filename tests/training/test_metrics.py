"""Where a stage's metrics go (`swin_flax.training.metrics`): JSON lines that a resumed run
continues without repeating a step, TensorBoard events, and the progress bar."""

import json

from swin_flax.training.metrics import MetricsWriter, ProgressBar


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
