"""The predict command (`swin_flax.commands.predict`; `python predict.py`,
`swin-flax-predict`): predictions are tests/deploy/test_predict.py's; here the program's
own arguments and errors."""

from swin_flax import cli
from swin_flax.commands import predict


def test_a_missing_model_is_one_error_line_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    (tmp_path / "image.jpg").write_bytes(b"not read: the model is missing")
    code = cli.run(predict.main, [str(tmp_path / "no_model"), str(tmp_path / "image.jpg")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == [
        f"error: {tmp_path / 'no_model'}: no such model file or checkpoint directory"
    ]


def test_top_k_defaults_to_five():
    assert predict.parse_args(["model", "a.jpg", "b.jpg"]).top == 5
