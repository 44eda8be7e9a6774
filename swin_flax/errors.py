"""The errors a user can cause (bad config, missing data or checkpoints, divergence).

Entry points print these as one clear line instead of a traceback; anything else is a
bug and keeps its traceback. Set SWIN_FLAX_DEBUG=1 to see tracebacks for these too.

A ValueError counts as the user's only when this project raised it: our checks raise
ValueError with a message that names the fix, but a ValueError from inside JAX, numpy or
optax means we let bad input through (or have a bug), and its traceback is the useful part.
"""

from __future__ import annotations

import types
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_PROJECT_CODE = (PROJECT_ROOT / "swin_flax", PROJECT_ROOT / "configs",
                 PROJECT_ROOT / "train.py", PROJECT_ROOT / "convert_timm_weights.py")


def user_errors() -> tuple[type[BaseException], ...]:
    """The classes an entry point catches; `is_user_error` then decides for ValueError."""
    return (ValueError, FileNotFoundError) + _project_error_classes()


def _project_error_classes() -> tuple[type[BaseException], ...]:
    from swin_flax.data import DatasetUnavailableError
    from swin_flax.trainer import TrainingDivergedError

    classes: list[type[BaseException]] = [DatasetUnavailableError, TrainingDivergedError]
    try:
        from swin_flax.convert import ConversionError

        classes.append(ConversionError)
    except ImportError:  # conversion extras not installed
        pass
    return tuple(classes)


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, _project_error_classes() + (FileNotFoundError,)):
        return True
    if isinstance(err, ValueError):
        return raised_by_project(err.__traceback__)
    return False


def raised_by_project(traceback: types.TracebackType | None) -> bool:
    """True when the innermost frame of `traceback` is this project's code."""
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    filename = Path(traceback.tb_frame.f_code.co_filename).resolve()
    return any(filename == code or code in filename.parents for code in _PROJECT_CODE)
