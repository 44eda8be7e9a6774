"""Fixtures of the weight-conversion tests."""

import jax
import pytest

from tests.weights import parity_report as parity


@pytest.fixture(autouse=True)
def highest_matmul_precision():
    """Parity with PyTorch in float32 needs full-precision matmuls. Set for each test here,
    not with jax.config.update at import: that would change every later test of the session
    (a full run imports every test module first)."""
    with jax.default_matmul_precision("highest"):
        yield


@pytest.fixture(scope="module")
def timm_models():
    """Perturbed timm models by configuration name, built once per module."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = parity.make_timm_model(parity.CONFIGS[name])
        return cache[name]

    return get
