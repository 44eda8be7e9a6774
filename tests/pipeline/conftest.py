"""Fixtures of the pipeline tests."""

import pytest


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data; its builders look unprepared, so report the network as up
    (the mocked download is a no-op) to reach the mocked reader."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from swin_flax.data import tfds_source

    monkeypatch.setattr(tfds_source, "network_available", lambda *a, **k: True)
    return tfds
