"""Optional dependencies: one way to import them, and one install hint per extra.

    onnx = require("onnx", "reading an ONNX model", "export")

imports the module, or raises one error line that says what needed it, which package is
missing and the command that installs it:

    reading an ONNX model needs the Python package 'onnx', which is not installed:
    pip install -e ".[export]"

The error class is the caller's (`UserInputError` by default; the converter raises
`ConversionError`), so each entry point reports it as it reports its other errors. A leaf:
imports only `swin_flax.errors`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from swin_flax.errors import UserInputError

# The command that installs each extra of pyproject.toml's [project.optional-dependencies]
# whose packages swin_flax imports on demand. None: a dependency of swin_flax itself,
# missing only from a broken or partial install.
INSTALL_HINTS: dict[str | None, str] = {
    None: "pip install -e .",
    "convert": 'pip install -e ".[convert]"',  # torch, timm, huggingface_hub
    "prepare": 'pip install -e ".[prepare]"',  # TensorFlow, to prepare TFDS data sets
    "export": 'pip install -e ".[export]"',  # onnx, onnxruntime, TensorFlow, LiteRT
}


def install_hint(extra: str | None) -> str:
    """`pip install -e ".[extra]"` for one of INSTALL_HINTS' extras."""
    if extra not in INSTALL_HINTS:
        # Our own typo, not the user's: a traceback, not an error line.
        raise KeyError(
            f"no install hint for extra {extra!r}; known: {sorted(map(str, INSTALL_HINTS))}"
        )
    return INSTALL_HINTS[extra]


def missing_package_message(
    purpose: str, package: str, extra: str | None, alternative: str = ""
) -> str:
    """'<purpose> needs the Python package '<package>', which is not installed: <hint>',
    with ', or <alternative>' when there is another way."""
    message = f"{purpose} needs the Python package '{package}', which is not installed: "
    message += install_hint(extra)
    return f"{message}, or {alternative}" if alternative else message


def require(
    module: str,
    purpose: str,
    extra: str | None = None,
    *,
    error: type[Exception] = UserInputError,
    alternative: str = "",
) -> ModuleType:
    """Import `module`, or raise `error` with `missing_package_message`.

    The package named is the one that is missing: `timm.models.swin_transformer` may
    fail on a missing dependency of timm, which the message then names.
    """
    install_hint(extra)  # a wrong extra fails here, also when the module is installed
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = getattr(err, "name", None) or module
        raise error(missing_package_message(purpose, package, extra, alternative)) from None
