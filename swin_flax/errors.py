"""The errors a user can cause (bad config, missing data or checkpoints, divergence).

Entry points print these as one clear line instead of a traceback; anything else is a
bug and keeps its traceback. Set SWIN_FLAX_DEBUG=1 to see tracebacks for these too.
"""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from swin_flax.data import DatasetUnavailableError
    from swin_flax.trainer import TrainingDivergedError

    errors: list[type[BaseException]] = [ValueError, FileNotFoundError, DatasetUnavailableError,
                                         TrainingDivergedError]
    try:
        from swin_flax.convert import ConversionError

        errors.append(ConversionError)
    except ImportError:  # conversion extras not installed
        pass
    return tuple(errors)
