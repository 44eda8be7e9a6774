"""Where metrics go: JSON lines and TensorBoard event files (process 0 only), and a progress bar."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import jax


def is_main_process() -> bool:
    return jax.process_index() == 0


class MetricsWriter:
    """Appends `{"step": s, ...}` lines to metrics.jsonl and scalars to TensorBoard."""

    def __init__(self, directory: str | Path, *, tensorboard: bool = True):
        self.enabled = is_main_process()
        self.directory = Path(directory)
        self._tb = None
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.directory / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter  # light: no TensorFlow needed

            self._tb = SummaryWriter(str(self.directory / "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class ProgressBar:
    """tqdm bar per stage: step, epoch, loss, img/s and ETA (tqdm computes the ETA)."""

    def __init__(self, stage: str, total_steps: int, initial_step: int, steps_per_epoch: int,
                 batch_size: int, enabled: bool = True):
        from tqdm.auto import tqdm

        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self._last = (time.perf_counter(), initial_step)
        self._bar = tqdm(total=total_steps, initial=initial_step, desc=stage, unit="step",
                         dynamic_ncols=True, file=sys.stderr,
                         disable=not (enabled and is_main_process()))

    def update(self, step: int, metrics: dict) -> None:
        now = time.perf_counter()
        then, then_step = self._last
        rate = (step - then_step) * self.batch_size / max(now - then, 1e-9)
        self._last = (now, step)
        self._bar.set_postfix(
            epoch=f"{step / self.steps_per_epoch:.2f}", loss=f"{metrics.get('loss', math.nan):.4f}",
            img_s=f"{rate:.0f}", refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()
