"""Where metrics go: JSON lines and TensorBoard event files (process 0 only), and a progress bar."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from swin_flax._files import write_text
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
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "metrics.jsonl"
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
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)

    def flush(self) -> None:
        """Before a checkpoint: steps up to it are never logged again after a resume."""
        if not self.enabled:
            return
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


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
    """tqdm bar per stage: step, epoch, loss, img/s and ETA (tqdm computes the ETA)."""

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

        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self._last = (time.perf_counter(), initial_step)
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

    def close(self) -> None:
        self._bar.close()
