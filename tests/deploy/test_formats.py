"""The writers of the deployment formats (`swin_flax.deploy.formats`): the input shape of
each layout, a StableHLO zip with its metadata, and LiteRT metadata entries replaced, not
repeated."""

import json
import zipfile

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax.deploy import formats, runners
from tests.helpers import tiny_model


def test_every_format_has_a_writer_and_an_input_layout():
    table = runners.FORMATS  # the one table: writer, loader, input layout, suffix
    assert {name: (f.name, f.input_layout, f.suffix) for name, f in table.items()} == {
        "onnx": ("onnx", "NCHW", ".onnx"),
        "litert": ("litert", "NHWC", ".tflite"),
        "stablehlo": ("stablehlo", "NHWC", ".zip"),
    }
    assert table["stablehlo"].write is formats.write_stablehlo
    assert table["stablehlo"].load is runners.load_stablehlo
    model = swin_flax.create_model("swin_pico", num_classes=10)
    assert formats._input_shape(model, 2) == [2, 32, 32, 3]
    assert formats._input_shape(model, None, "NCHW") == [None, 3, 32, 32]


def test_a_stablehlo_export_is_a_zip_of_the_model_and_its_metadata(tmp_path):
    model = tiny_model()  # the export traces and compiles the model: the smallest one
    params = swin_flax.init_params(model, 0)
    metadata = {"img_size": 8, "input_layout": "NHWC", "batch_size": 2}
    out = tmp_path / "m.zip"
    info = formats.write_stablehlo(model, params, out, batch=2, precision="fp32", metadata=metadata)
    assert info["platforms"] == ["cpu"] and info["bytes"] > 0
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(
            [runners.STABLEHLO_MODEL_ENTRY, runners.STABLEHLO_METADATA_ENTRY]
        )
        stored = json.loads(archive.read(runners.STABLEHLO_METADATA_ENTRY))
    assert stored == formats.encode_metadata(metadata)
    runner = runners.load_stablehlo(out)
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    expected = jax.jit(lambda x: model.apply({"params": params}, x))(images)
    np.testing.assert_allclose(runner(images), expected, atol=1e-4)


@pytest.mark.export
def test_litert_metadata_is_added_once_and_replaced_on_a_second_write():
    flatbuffers = pytest.importorskip("flatbuffers")
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    empty = schema.ModelT()
    empty.version = 3
    empty.buffers = [schema.BufferT()]  # buffer 0 is the empty one, as converters write it
    builder = flatbuffers.Builder(64)
    builder.Finish(empty.Pack(builder), file_identifier=b"TFL3")
    content = bytes(builder.Output())
    once = formats.add_litert_metadata(content, "swin_flax", b'{"a": 1}')
    twice = formats.add_litert_metadata(once, "swin_flax", b'{"a": 2}')
    assert runners.read_litert_metadata(once) == {"swin_flax": b'{"a": 1}'}
    assert runners.read_litert_metadata(twice) == {"swin_flax": b'{"a": 2}'}
    assert twice[4:8] == b"TFL3"  # still a .tflite flatbuffer (what detect_format reads)


def structure(config) -> tuple:
    """What decides whether a converter can convert a Swin: the input and the token grid of
    every stage (image size, patch, window, number of stages, channels), the MLP and the qkv
    bias; not the widths or the number of blocks beyond the two of a shifted pair."""
    return (
        config.img_size,
        config.patch_size,
        config.window_size,
        len(config.depths),
        config.in_chans,
        config.mlp_ratio,
        config.qkv_bias,
    )


def miniature(structure_key: tuple):
    """The smallest model of that structure: 16 channels, one shifted pair per stage."""
    img_size, patch, window, stages, chans, mlp_ratio, qkv_bias = structure_key
    return swin_flax.SwinTransformer(
        swin_flax.SwinConfig(
            img_size=img_size,
            patch_size=patch,
            window_size=window,
            in_chans=chans,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            embed_dim=16,
            depths=(2,) * stages,
            num_heads=tuple(2**i for i in range(stages)),
            num_classes=5,
            drop_path_rate=0.0,
        )
    )


def preset_structures() -> dict[tuple, list[str]]:
    from swin_flax.model.presets import MODEL_PRESETS

    found: dict[tuple, list[str]] = {}
    for name, config in MODEL_PRESETS.items():
        found.setdefault(structure(config), []).append(name)
    return found


def test_the_preset_structures_cover_every_preset():
    from swin_flax.model.presets import MODEL_PRESETS

    found = preset_structures()
    assert sorted(n for names in found.values() for n in names) == sorted(MODEL_PRESETS)
    # 224 px / window 7, 384 px / window 12, CIFAR-native patch 2 and patch 4
    assert {k[:3] for k in found} == {(224, 4, 7), (384, 4, 12), (32, 2, 4), (32, 4, 4)}


@pytest.mark.slow
@pytest.mark.export
@pytest.mark.torch
@pytest.mark.parametrize(
    "key", [pytest.param(k, id="-".join(names[:3])) for k, names in preset_structures().items()]
)
def test_every_preset_structure_exports_at_fp32_to_every_format(key, tmp_path):
    """Each preset's structure, at batch 1 (the LiteRT 1x1-last-stage case included), to
    every format at fp32, within the fp32 tolerance of Flax."""
    for module in ("torch", "timm", "onnxscript", "onnxruntime", "tensorflow", "ai_edge_litert"):
        pytest.importorskip(module)
    formats.keep_triton_out_after_tensorflow()
    from swin_flax.deploy.export import FP32_TOLERANCE, export_checkpoint
    from swin_flax.weights.checkpoint import save_checkpoint

    model = miniature(key)
    params = swin_flax.init_params(model, 0)
    save_checkpoint(tmp_path / "ckpt", model, params)
    for fmt, spec in runners.FORMATS.items():
        report = export_checkpoint(tmp_path / "ckpt", tmp_path / f"m{spec.suffix}", fmt, batch=1)
        assert report.max_abs_diff <= FP32_TOLERANCE, (fmt, report.max_abs_diff)
        assert report.top1_agreement == 1.0
