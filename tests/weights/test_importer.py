"""Importing weights (`swin_flax.weights.importer`): the model built from what the weights
say, changed only where asked, and written as a swin_flax checkpoint."""

import numpy as np
import pytest

import swin_flax
from swin_flax.errors import CheckpointError, ConversionError, UserInputError
from swin_flax.weights import importer
from swin_flax.weights import timm as C
from tests.helpers import assert_trees_equal


@pytest.mark.torch
def test_image_size_the_model_cannot_take(timm_models, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pico.pth"
    torch.save(timm_models("pico_32").state_dict(), path)
    with pytest.raises(
        C.ConversionError,
        match=r"(?s)cannot build a Swin model for .*pico\.pth.*"
        r"img_size 40 must be divisible by .* 16",
    ):
        importer.convert(path, tmp_path / "out", img_size=40)


def architecture(model):
    """The model's config but the drop-path rate: training, not something weights hold."""
    return model.config.replace(drop_path_rate=0.0)


def saved_pico(tmp_path, num_classes=10):
    """A swin_pico in timm's .safetensors layout (no torch needed to write or read it)."""
    model = swin_flax.create_model("swin_pico", num_classes=num_classes)
    params = swin_flax.init_params(model, 3)
    return model, params, C.save_timm_safetensors(params, tmp_path / "pico.safetensors")


def test_a_timm_file_becomes_a_checkpoint_of_the_same_model_and_weights(tmp_path):
    model, params, path = saved_pico(tmp_path)
    imported, imported_params = importer.convert(path, tmp_path / "out")
    assert architecture(imported) == architecture(model)
    assert_trees_equal(params, imported_params)
    loaded_model, loaded = swin_flax.load_checkpoint(tmp_path / "out")
    assert architecture(loaded_model) == architecture(model)
    assert_trees_equal(params, loaded)


def test_window_and_head_changes_are_explicit(tmp_path):
    _, params, path = saved_pico(tmp_path)
    moved = importer.import_weights(path, window_size=8)
    assert (moved.model.window_size, moved.model.img_size) == (8, 128)  # last stage: 1 window
    table = moved.params["layers_0"]["blocks_0"]["attn"]["relative_position_bias_table"]
    assert table.shape == (15 * 15, 1)
    headless = importer.import_weights(path, head="drop")
    assert headless.model.num_classes == 0 and "head" not in headless.params
    with pytest.raises(UserInputError, match="head must be one of"):
        importer.import_weights(path, head="replace")
    with pytest.raises(ConversionError, match="num_classes=5 contradicts it"):
        importer.import_weights(path, head="drop", num_classes=5)
    with pytest.raises(CheckpointError, match="already exists"):
        (tmp_path / "taken").mkdir()
        (tmp_path / "taken" / "x").write_text("")
        importer.convert(path, tmp_path / "taken")
    np.testing.assert_array_equal(
        moved.params["layers_3"]["blocks_1"]["mlp"]["fc2"]["kernel"],
        params["layers_3"]["blocks_1"]["mlp"]["fc2"]["kernel"],
    )


def test_a_fresh_head_is_said_in_one_note(capsys):
    from swin_flax.weights.importer import note_fresh_head

    note_fresh_head("teacher.init runs/a/teacher/final_model", 10, 3)
    note_fresh_head("teacher.init timm:x.safetensors", 0, 5)
    assert capsys.readouterr().err.splitlines() == [
        "note: teacher.init runs/a/teacher/final_model has a 10-class head: the 3-class head "
        "for this data set starts fresh (every other weight is loaded)",
        "note: teacher.init timm:x.safetensors has no classifier head: the 5-class head for "
        "this data set starts fresh (every other weight is loaded)",
    ]
