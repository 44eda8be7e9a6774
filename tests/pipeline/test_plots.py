"""The report's plots (`swin_flax.pipeline.plots`): small PNG files from plain numbers,
with no figure left open."""

import matplotlib.pyplot as plt

from swin_flax.pipeline import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_accuracy_per_epoch_writes_a_small_png_into_a_new_folder(tmp_path):
    curves = {"n random": {1.0: [40.0, 42.0], 2.0: [55.0, 57.0]}, "n transfer": {1.0: [60.0]}}
    path = plots.accuracy_per_epoch(curves, tmp_path / "plots" / "epochs.png")
    assert path == tmp_path / "plots" / "epochs.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and 1000 < len(data) < 100_000
    assert plt.get_fignums() == []


def test_accuracy_vs_draws_every_point_including_a_flagged_one(tmp_path):
    points = [("n", 20e6, 70.0, 1.5, False), ("t", 28e6, 75.0, 0.0, True)]
    path = plots.accuracy_vs(points, "parameters", tmp_path / "params.png", title="top-1")
    wide = [("n", 10.0, 70.0, 1.0, False), ("t", 1000.0, 75.0, 1.0, False)]  # log x axis
    other = plots.accuracy_vs(wide, "images/s", tmp_path / "speed.png", title="top-1")
    for written in (path, other):
        assert written.read_bytes().startswith(PNG_MAGIC)
    assert path.read_bytes() != other.read_bytes()
    assert plt.get_fignums() == []
