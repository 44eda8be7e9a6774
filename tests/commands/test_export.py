"""The export command (`swin_flax.commands.export`; `python export.py`, `swin-flax-export`):
exports are tests/deploy/test_export.py's; here the program's own arguments and errors."""

import pytest

from swin_flax import cli
from swin_flax.commands import export


def test_a_missing_checkpoint_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    code = cli.run(
        export.main, [str(tmp_path / "nowhere"), str(tmp_path / "m.onnx"), "--format", "onnx"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(tmp_path / "nowhere") in err
    assert err.count("\n") == 1


def test_the_format_is_required():
    with pytest.raises(SystemExit) as stopped:
        export.parse_args(["ckpt", "out.onnx"])
    assert stopped.value.code == 2
    assert export.parse_args(["ckpt", "o.tflite", "--format", "litert"]).format == "litert"
