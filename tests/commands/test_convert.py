"""The convert command (`swin_flax.commands.convert`; `python convert_timm_weights.py`,
`swin-flax-convert`): its conversions are tests/weights/test_timm.py's and
test_transformers.py's; here the program's own rules, one error line and exit code 2."""

import subprocess
import sys

import pytest

from swin_flax import cli
from swin_flax.commands import convert
from tests.helpers import REPO


def test_export_and_import_options_do_not_mix(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    assert cli.run(convert.main, ["--format", "timm", "a", str(tmp_path / "b")]) == 2
    assert (
        capsys.readouterr().err
        == "error: --format is for --export (an import detects the layout)\n"
    )
    assert cli.run(convert.main, ["--export", "--num-classes", "3", "a", "b"]) == 2
    assert "--export takes no model options" in capsys.readouterr().err


@pytest.mark.multiprocess
def test_the_installed_entry_point_exits_2_after_one_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from swin_flax.commands.convert import run; run()", "--format",
         "timm", "a", str(tmp_path / "b")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --format is for --export (an import detects the layout)"
    ]
