"""swin_flax._optional: one optional-import helper; its error names what needed the package,
the package missing and the install command of the extra, in the caller's error class."""

import json
import sys
from pathlib import Path

import pytest

from swin_flax import _optional
from swin_flax.errors import ConversionError, DatasetUnavailableError, UserInputError

ROOT = Path(__file__).resolve().parents[1]


def test_an_installed_module_is_returned():
    assert _optional.require("json", "reading metadata", "export") is json


def test_a_missing_module_is_one_line_with_the_extras_install_command():
    with pytest.raises(UserInputError) as info:
        _optional.require("swin_flax_no_such_exporter", "the test export", "export")
    assert str(info.value) == (
        "the test export needs the Python package 'swin_flax_no_such_exporter', which is "
        'not installed: pip install -e ".[export]"'
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_the_callers_error_class_and_alternative_are_kept():
    with pytest.raises(ConversionError, match=r'\.\[convert\]", or convert it elsewhere$'):
        _optional.require(
            "swin_flax_no_torch",
            "reading x.pth",
            "convert",
            error=ConversionError,
            alternative="convert it elsewhere",
        )
    with pytest.raises(DatasetUnavailableError, match=r'pip install -e "\.\[prepare\]"'):
        _optional.require(
            "swin_flax_no_tf", "reading a tfrecord", "prepare", error=DatasetUnavailableError
        )
    # A dependency of swin_flax itself: the base install's command.
    with pytest.raises(ImportError, match=r"which is not installed: pip install -e \.$"):
        _optional.require("swin_flax_no_tfds", "load_tfds", error=ImportError)


def test_the_package_named_is_the_one_missing(tmp_path, monkeypatch):
    # A module that is there but needs another that is not: the message names the other.
    (tmp_path / "swin_flax_exporter_shim.py").write_text("import swin_flax_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserInputError, match="package 'swin_flax_missing_dependency'"):
        _optional.require("swin_flax_exporter_shim", "the ONNX export", "export")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(UserInputError, match="package 'torch'"):
        _optional.require("torch", "the ONNX export", "export")


def test_an_unknown_extra_is_our_bug_even_when_the_module_is_installed():
    with pytest.raises(KeyError, match="no install hint for extra 'exprot'"):
        _optional.require("json", "reading metadata", "exprot")


def test_every_hinted_extra_is_declared_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    hinted = {extra for extra in _optional.INSTALL_HINTS if extra is not None}
    assert hinted and hinted <= set(extras)
    for extra in hinted:
        assert _optional.install_hint(extra) == f'pip install -e ".[{extra}]"'
