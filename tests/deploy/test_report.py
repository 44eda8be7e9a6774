"""The deployment table (`python -m swin_flax.deploy.report`): every format at every precision
it supports, each file measured; a failed export is a row saying why; markdown, JSON and the
top-1 / size plot."""

import json

import numpy as np
import pytest
from PIL import Image

import swin_flax
from swin_flax.deploy import report, runners
from swin_flax.weights.checkpoint import save_checkpoint
from tests.helpers import tiny_model


def test_the_table_holds_every_format_at_every_precision_int8_with_calibration():
    assert report.planned_exports(calibrated=True) == [
        ("onnx", "fp32"),
        ("onnx", "fp16"),
        ("onnx", "int8-weights"),
        ("onnx", "int8"),
        ("litert", "fp32"),
        ("litert", "fp16"),
        ("litert", "int8-weights"),
        ("litert", "int8"),
        ("stablehlo", "fp32"),
        ("stablehlo", "fp16"),
    ]
    assert ("onnx", "int8") not in report.planned_exports(calibrated=False)
    assert len(report.planned_exports(calibrated=False)) == 8


CONTEXT = {
    "checkpoint": "ckpt",
    "model": "Swin tiny",
    "evaluation": "20 images in 2 class folders of eval",
    "flax_top1": 60.0,
    "calibration": "10 images from cal (seed 0)",
    "batch": 1,
    "threads": 1,
}


def row(fmt, precision, top1, size, **extra):
    return {
        "format": fmt,
        "precision": precision,
        "size_mb": size,
        "latency_ms": {"1": 1.5, "32": 40.25},
        "top1": top1,
        "drop": 60.0 - top1,
        "agreement": 95.0,
        **extra,
    }


def test_the_markdown_table_has_one_line_per_export_and_says_why_one_failed():
    rows = [
        row("onnx", "fp32", 60.0, 21.2),
        row("onnx", "int8", 58.5, 5.6, float_ops={"LayerNormalization": 21, "Gelu": 8}),
        row("litert", "int8", 61.0, 5.5, float_ops={}),
        {"format": "litert", "precision": "fp16", "error": "the TFLite converter failed: x"},
    ]
    text = report.markdown_table(rows, CONTEXT, command="python -m swin_flax.deploy.report c")
    lines = text.splitlines()
    assert "Flax float32 top-1 **60.00%**" in lines[0]
    assert "    python -m swin_flax.deploy.report c" in lines
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| format | precision | size MB | ms, batch 1 | ms, batch 32 |")
    assert table[1] == (
        "| onnx | fp32 | 21.20 | 1.50 | 40.25 | 60.00 | +0.00 | 95.00 | all (float model) |"
    )
    assert table[2].endswith("| 58.50 | +1.50 | 95.00 | LayerNormalization x21, Gelu x8 |")
    assert table[3].endswith("| 61.00 | -1.00 | 95.00 | none |")
    assert (
        table[4]
        == "| litert | fp16 | - | - | - | - | - | - | failed: the TFLite converter failed: x |"
    )
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_ops_left_float_name_the_most_frequent_and_count_the_rest():
    ops = {"MUL": 9, "ADD": 7, "SUB": 5, "SUM": 4, "RSQRT": 2, "GELU": 1}
    assert report._left_float(row("litert", "int8-weights", 1, 1, float_ops=ops)) == (
        "MUL x9, ADD x7, SUB x5, SUM x4, 3 more"
    )


def test_the_plot_is_a_png(tmp_path):
    rows = [row("onnx", "fp32", 60.0, 21.2), row("litert", "int8", 59.0, 5.5)]
    path = report.plot_top1_vs_size(rows, 60.0, tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_command_writes_the_table_json_and_plot(tmp_path, monkeypatch, capsys):
    # StableHLO only (no export extra needed): fp32 and fp16 rows, measured on 9 images.
    monkeypatch.setattr(report, "FORMATS", {"stablehlo": runners.FORMATS["stablehlo"]})
    model = tiny_model(num_classes=3)
    save_checkpoint(
        tmp_path / "ckpt", model, swin_flax.init_params(model, 0), class_names=["a", "b", "c"]
    )
    rng = np.random.default_rng(0)
    for i in range(9):
        folder = tmp_path / "eval" / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    argv = [
        str(tmp_path / "ckpt"),
        "--evaluate",
        str(tmp_path / "eval"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert report.main(argv) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "deploy.json",
        "deploy.md",
        "stablehlo_fp16.zip",
        "stablehlo_fp32.zip",
        report.PLOT_FILE,
    ]
    stored = json.loads((out / "deploy.json").read_text())
    rows = stored["rows"]
    assert [(r["format"], r["precision"]) for r in rows] == [
        ("stablehlo", "fp32"),
        ("stablehlo", "fp16"),
    ]
    assert rows[0]["images"] == 9 and rows[0]["top1"] == rows[0]["flax_top1"]
    assert rows[0]["agreement"] == 100.0
    assert stored["context"]["flax_top1"] == rows[0]["flax_top1"]
    table = (out / "deploy.md").read_text()
    assert "No --calibration: no int8 rows." in table
    assert "python -m swin_flax.deploy.report" in table and "| stablehlo | fp16 |" in table
    assert "wrote" in capsys.readouterr().out
