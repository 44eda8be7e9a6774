"""Which errors the entry points print as one line (the user's) and which keep a traceback."""

import numpy as np
import pytest

from swin_flax import errors
from swin_flax.errors import DatasetUnavailableError
from swin_flax.model import presets


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, errors.USER_ERRORS)


def _caught(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_value_error_from_our_checks_is_the_users():
    err = _caught(lambda: presets.create_model("swin_q"))
    assert isinstance(err, ValueError) and "unknown model name" in str(err)
    assert is_user_error(err)


def test_value_error_from_inside_numpy_is_a_bug_with_traceback():
    err = _caught(lambda: np.zeros(6).reshape(4, 4))
    assert isinstance(err, ValueError)
    assert not is_user_error(err)


def test_plain_value_error_in_our_code_is_a_bug_with_traceback():
    def unpack_in_project_code():
        first, second = (5,)  # what a missing check lets through: not the user's message
        return first, second

    assert not is_user_error(_caught(unpack_in_project_code))


def test_project_error_classes_and_missing_files_are_the_users():
    assert is_user_error(DatasetUnavailableError("cifar100 is not prepared"))
    assert is_user_error(_caught(lambda: open("/nonexistent/swin_flax_file")))
    assert not is_user_error(RuntimeError("internal"))
