"""Every error a user can cause (bad config, missing or damaged data and checkpoints,
divergence, a busy workdir), and the signal-driven stop. Imports nothing of ours: every
module can raise these without an import cycle.

Entry points (`swin_flax.cli.run`) print these as one `error:` line with exit code 2
instead of a traceback; anything else is a bug and keeps its traceback. Set
SWIN_FLAX_DEBUG=1 to see tracebacks for these too.

The project's own checks raise `UserInputError`, a ValueError whose message names what was
expected. A plain ValueError (from numpy, JAX, or tuple unpacking in our code) means bad
input got past the checks, or a bug: there the traceback is the useful part.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input that the user can fix: the message says what was expected."""


class CheckpointError(UserInputError):
    """A path that is not (or cannot become) a swin_flax checkpoint; the message says why."""


class CheckpointRestoreError(UserInputError):
    """No train-state checkpoint of a stage restores; the message lists what was tried."""


class ConversionError(UserInputError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


class BadImagesError(UserInputError):
    """Image files that cannot be decoded. `bad_files` holds (path, reason) pairs."""

    def __init__(self, message: str, bad_files: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.bad_files = bad_files


class WorkdirInUseError(UserInputError):
    """Another live process holds the workdir's lock."""


class DatasetUnavailableError(RuntimeError):
    """A TFDS data set is not prepared locally and cannot be downloaded here."""


class DataLoaderError(RuntimeError):
    """Streaming a batch failed for a reason other than the data's (a decoding thread's
    error); the steps before it are saved and the same command resumes."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept for inspection or resume."""


class RunPreempted(Exception):
    """SIGTERM/SIGINT stopped the run after a checkpoint was saved; the same command resumes.

    Not an error in the user's input: entry points exit with `cli.PREEMPTED_EXIT_CODE` (75).
    """


# What an entry point prints as one line (the UserInputError family included). OSError:
# a missing file, a full disk or a read-only directory; its message names the path.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserInputError,
    OSError,
    DatasetUnavailableError,
    DataLoaderError,
    TrainingDivergedError,
)
