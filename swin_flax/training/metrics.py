"""Where metrics go: JSON lines and TensorBoard event files (process 0 only), and a progress bar."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

from swin_flax._files import DiskFullError, stop_when_disk_full, write_text
from swin_flax.training.distributed import is_main_process


class MetricsWriter:
    """Appends `{"step": s, ...}` lines to metrics.jsonl and scalars to TensorBoard.

    `resume_step` is the step the run restarts from. Lines logged after it by the
    interrupted run are dropped, and TensorBoard hides its events past it (purge_step),
    because the resumed run logs those steps again: each step then appears exactly once.
    """

    def __init__(self, directory: str | Path, *, resume_step: int = 0, tensorboard: bool = True):
        self.enabled = is_main_process()
        self.directory = Path(directory)
        self._tb = None
        self.last_logged: dict = {}
        self.path = self.directory / "metrics.jsonl"
        self._written_step = resume_step  # the last step whose line reached the file
        self._failed = False  # a write found the disk full; that error is the one reported
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path
        kept = _truncate_after(path, resume_step)
        if kept:
            self.last_logged = {k: v for k, v in kept[-1].items() if k != "step"}
        self._jsonl = open(path, "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter  # light: no TensorFlow needed

            # Also on a fresh start (resume_step 0): events an earlier attempt left are hidden.
            self._tb = SummaryWriter(
                str(self.directory / "tensorboard"), purge_step=resume_step + 1
            )

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in metrics.items()}
        with self._stop_when_disk_full(step):
            self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")  # line-buffered
        self._written_step = step
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)

    def flush(self) -> None:
        """Before a checkpoint: steps up to it are never logged again after a resume."""
        if not self.enabled:
            return
        with self._stop_when_disk_full(self._written_step):
            self._jsonl.flush()
            if self._tb is not None:
                self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._failed:  # the full disk is reported already; what is unwritten is lost
            _close_quietly(self._jsonl, self._tb)
            return
        with self._stop_when_disk_full(self._written_step):
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()

    @contextlib.contextmanager
    def _stop_when_disk_full(self, step: int):
        """A full disk is one DiskFullError naming the step; it marks the writer failed,
        so that closing it in the loop's `finally` adds no second error."""
        try:
            with stop_when_disk_full(
                self.path,
                f"logging step {step} to {self.path}",
                f"it keeps the lines up to step {self._written_step}",
            ):
                yield
        except DiskFullError:
            self._failed = True
            raise


def _close_quietly(*files) -> None:
    for f in files:
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 (the disk is full: closing may fail again)
                pass


def _truncate_after(path: Path, step: int) -> list[dict]:
    """Keep the lines of `path` with step <= `step` (atomically); return them parsed."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("step", 0) <= step:
            kept.append(record)
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


class ProgressBar:
    """tqdm bar per stage: step, epoch, loss, img/s and ETA (tqdm computes the ETA); and,
    with or without the bar, one line on stdout once the first steps are timed: the time
    per step and what the rest of the stage will take."""

    def __init__(
        self,
        stage: str,
        total_steps: int,
        initial_step: int,
        steps_per_epoch: int,
        batch_size: int,
        enabled: bool = True,
    ):
        from tqdm.auto import tqdm

        self.stage, self.total_steps = stage, total_steps
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self._last = (time.perf_counter(), initial_step)
        self._timed_from: tuple[float, int] | None = None  # the first update: compiled by then
        self._estimated = False
        self._bar = tqdm(
            total=total_steps,
            initial=initial_step,
            desc=stage,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            disable=not (enabled and is_main_process()),
        )

    def update(self, step: int, metrics: dict) -> None:
        now = time.perf_counter()
        then, then_step = self._last
        rate = (step - then_step) * self.batch_size / max(now - then, 1e-9)
        self._last = (now, step)
        self._bar.set_postfix(
            epoch=f"{step / self.steps_per_epoch:.2f}",
            loss=f"{metrics.get('loss', math.nan):.4f}",
            img_s=f"{rate:.0f}",
            refresh=False,
        )
        self._bar.update(step - self._bar.n)
        self._say_how_long(now, step)

    def _say_how_long(self, now: float, step: int) -> None:
        """Once, at the second update: the time per step since the first (the interval
        before it holds the compilation) and what the steps left will take."""
        if self._timed_from is None:
            self._timed_from = (now, step)
            return
        if self._estimated:
            return
        self._estimated = True
        start, start_step = self._timed_from
        left = self.total_steps - step
        if step <= start_step or left <= 0 or not is_main_process():
            return
        per_step = (now - start) / (step - start_step)
        self._bar.write(
            f"{self.stage}: {per_step:.3g} s per step (timed over steps {start_step}-{step}): "
            f"about {describe_duration(per_step * left)} for the {left:,} steps left",
            file=sys.stdout,
        )

    def close(self) -> None:
        self._bar.close()


def describe_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.4 h', '2.1 days': the unit that keeps the number short."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.2g} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
