"""The errors a user can cause (bad config, missing data or checkpoints, divergence).

Entry points print these as one clear line instead of a traceback; anything else is a
bug and keeps its traceback. Set SWIN_FLAX_DEBUG=1 to see tracebacks for these too.

The project's own checks raise `UserInputError`, a ValueError whose message names what was
expected. A plain ValueError (from numpy, JAX, or tuple unpacking in our code) means bad
input got past the checks, or a bug: there the traceback is the useful part.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input that the user can fix: the message says what was expected."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept for inspection or resume."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes an entry point prints as one line."""
    # CheckpointError and ConversionError are UserInputErrors too.
    from swin_flax.data import DatasetUnavailableError

    return (UserInputError, FileNotFoundError, DatasetUnavailableError, TrainingDivergedError)


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, user_errors())


class RunPreempted(Exception):
    """SIGTERM/SIGINT stopped the run after a checkpoint was saved; the same command resumes.

    Not an error in the user's input: entry points exit with `preemption.PREEMPTED_EXIT_CODE`.
    """
