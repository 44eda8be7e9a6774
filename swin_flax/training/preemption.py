"""Stop cleanly on SIGTERM / SIGINT: finish the step, save, flush, exit with a resumable code.

SLURM, Kubernetes and cloud GPU/TPU preemption send SIGTERM and allow a grace period;
Ctrl-C sends SIGINT. Python's default reaction (exit 143 at once, or a KeyboardInterrupt
raised wherever the interpreter happens to be, even inside a JAX callback that swallows it)
loses every step since the last periodic checkpoint. Here the first signal only sets a
flag; the training loop reads it after each step (`stop_requested()`), saves a
checkpoint and raises `RunPreempted`, which `cli.run` turns into exit code 75.
A second SIGINT aborts at once. Before there is anything to save (while the data is
decoded, `stop_at_once`), the first signal stops the run at once instead (exit 75 too).

Several processes (`jax.distributed`) must stop at the same step, or the ones that go on
wait forever in the next collective. There JAX's own preemption notifier owns SIGTERM: it
tells the coordination service, and `multihost_utils.reached_preemption_sync_point(step)`
becomes true on every process at one agreed step. A first SIGINT is forwarded to it as a
SIGTERM, so both signals take the same agreed path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

import jax

from swin_flax.errors import RunPreempted

_state = {"signal": None, "sync_calls": 0, "at_once": None}


def _multi_process() -> bool:
    return jax.process_count() > 1


def _on_signal(signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if _state["signal"] is not None and signum == signal.SIGINT:
        print(
            f"\n{name} again: aborting now without saving (the last checkpoint is kept)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(128 + signum)
    phase = _state["at_once"]
    if phase is not None and not _multi_process():
        _state["signal"] = name
        print(f"\n{name} received while {phase}: stopping now", file=sys.stderr, flush=True)
        raise RunPreempted(f"stopped by {name} while {phase}; nothing to save, nothing lost")
    if _state["signal"] is None:
        doing = f"{phase}, then at the first step" if phase else "the current step"
        print(
            f"\n{name} received: finishing {doing}, then saving a checkpoint "
            "(Ctrl-C again aborts at once)",
            file=sys.stderr,
            flush=True,
        )
    _state["signal"] = name
    if _multi_process() and signum == signal.SIGINT:
        os.kill(os.getpid(), signal.SIGTERM)  # into JAX's notifier: all processes agree


@contextlib.contextmanager
def handle_stop_signals():
    """Within this block the first SIGTERM/SIGINT requests a clean stop instead of killing.

    Only the main thread can install handlers; elsewhere (a library caller's worker
    thread) this is a no-op and signals keep their usual effect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [signal.SIGINT] if _multi_process() else [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, _on_signal) for sig in handled}
    _state["signal"] = None
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def stop_at_once(phase: str):
    """Within this block (work with nothing to save: `phase`, e.g. 'decoding the data') the
    first SIGINT/SIGTERM raises `RunPreempted` at once, wherever the main thread waits (a
    pool of decoding threads stops starting work), instead of waiting for a step. With
    several processes the signal still takes the agreed path: all stop at the first step."""
    before = _state["at_once"]
    _state["at_once"] = phase
    try:
        yield
    finally:
        _state["at_once"] = before


def stop_requested() -> bool:
    """Whether to save and stop after the step just run (the same answer on every process).

    Call it once per step on every process: there it is JAX's preemption sync point, which
    needs increasing ids. Steps restart at 0 in each stage, so the id is a count of calls,
    the same on every process because every process runs the same loop. This is the only
    caller: orbax's CheckpointManager, which would report a stage's steps as ids, is kept
    from calling it (swin_flax/training/checkpoints.py).
    """
    if _multi_process():
        from jax.experimental import multihost_utils

        _state["sync_calls"] += 1
        if multihost_utils.reached_preemption_sync_point(_state["sync_calls"]):
            _state["signal"] = _state["signal"] or "SIGTERM"
            return True
        return False
    return _state["signal"] is not None


def pending_signal() -> str | None:
    """The signal that asked for a stop, if any (checked between stages too)."""
    return _state["signal"]
