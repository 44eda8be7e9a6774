"""The predict command (`swin_flax.commands.predict`; `python predict.py`,
`swin-flax-predict`): predictions are tests/deploy/test_predict.py's; here the program's
own arguments and errors."""

from swin_flax import cli
from swin_flax.commands import predict


def test_an_unreadable_image_is_one_error_line_before_any_model_loads(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    code = cli.run(predict.main, [str(tmp_path / "no_model"), str(tmp_path / "broken.jpg")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "broken.jpg" in err
    assert "no_model" not in err  # the images are read first


def test_top_k_defaults_to_five():
    assert predict.parse_args(["model", "a.jpg", "b.jpg"]).top == 5
