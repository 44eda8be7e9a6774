"""swin_flax checkpoints (`swin_flax.weights.checkpoint`): the model's config and class
names stored beside the parameters, a dtype changed on load, and every refusal."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import swin_flax
from swin_flax._files import DiskFullError
from swin_flax.errors import CheckpointError
from swin_flax.weights import checkpoint, layouts
from swin_flax.weights import timm as C
from swin_flax.weights.checkpoint import load_checkpoint, save_checkpoint
from tests.helpers import REPO, assert_trees_equal, pico_state, random_teacher, tiny_model
from tests.test_files import small_disk
from tests.weights import parity_report as parity


@pytest.mark.torch
def test_checkpoint_roundtrip_with_dtype_override(timm_models, tmp_path):
    state = pico_state(timm_models)
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**layouts.infer_architecture(state)))
    params = C.timm_to_flax(state, model)
    save_checkpoint(tmp_path / "ckpt", model, params)
    loaded_model, loaded = swin_flax.load_checkpoint(tmp_path / "ckpt", dtype=jnp.bfloat16)
    assert loaded_model.dtype == jnp.bfloat16
    assert swin_flax.model_config(loaded_model) == swin_flax.model_config(model)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        assert b.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="change the parameter shapes"):
        load_checkpoint(tmp_path / "ckpt", num_classes=3)
    with pytest.raises(CheckpointError, match="already exists.*--overwrite"):
        save_checkpoint(tmp_path / "ckpt", model, params)
    save_checkpoint(tmp_path / "ckpt", model, params, overwrite=True)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a swin_flax checkpoint.*'params'"):
        load_checkpoint(tmp_path / "notes")
    model = swin_flax.SwinTransformer(swin_flax.SwinConfig(**parity.CONFIGS["pico_32"]))
    params = jax.tree_util.tree_map(
        lambda x: jnp.zeros(x.shape, x.dtype), swin_flax.abstract_params(model)
    )
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_checkpoint(tmp_path / "notes", model, params, overwrite=True)
    assert (tmp_path / "notes" / "a.txt").exists()
    other = swin_flax.SwinTransformer(
        swin_flax.SwinConfig(**dict(parity.CONFIGS["pico_32"], num_classes=3))
    )
    with pytest.raises(CheckpointError, match="params do not match the model"):
        save_checkpoint(tmp_path / "bad", other, params)


def test_class_names_and_the_model_config_are_stored_beside_the_params(tmp_path):
    model = tiny_model(num_classes=2)
    params = swin_flax.init_params(model, 0)
    assert not checkpoint.is_checkpoint(tmp_path / "ckpt")
    save_checkpoint(tmp_path / "ckpt", model, params, class_names=["cat", "dog"])
    assert checkpoint.is_checkpoint(tmp_path / "ckpt")
    assert checkpoint.load_class_names(tmp_path / "ckpt") == ["cat", "dog"]
    assert checkpoint.load_model_config(tmp_path / "ckpt") == swin_flax.model_config(model)
    loaded_model, loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded_model == model
    assert_trees_equal(params, loaded)
    save_checkpoint(tmp_path / "plain", model, params)
    assert checkpoint.load_class_names(tmp_path / "plain") is None


def test_the_stored_size_of_training_is_kept_for_deployment(tmp_path):
    model = tiny_model(num_classes=2)
    params = swin_flax.init_params(model, 0)
    save_checkpoint(tmp_path / "ckpt", model, params, stored_size=64)
    assert checkpoint.load_preprocessing(tmp_path / "ckpt") == {"stored_size": 64}
    save_checkpoint(tmp_path / "plain", model, params)  # converted weights, older runs
    assert checkpoint.load_preprocessing(tmp_path / "plain") == {"stored_size": None}
    with pytest.raises(CheckpointError, match="stored_size must be a side in pixels"):
        save_checkpoint(tmp_path / "bad", model, params, stored_size=0)


# --- damaged checkpoints: one CheckpointError naming the directory, whatever orbax raises


def saved_tiny_checkpoint(path):
    model = tiny_model(num_classes=2)
    save_checkpoint(path, model, swin_flax.init_params(model, 0), class_names=["cat", "dog"])
    return path


def cut_data_files(directory, size=100):
    """Cut every data file (tensorstore's `d/` folders) under `directory` to `size` bytes
    (half its size if smaller), as a disk that filled up leaves them. Every one, not only
    the largest: OCDBT may keep files that no parameter reads (e.g. a process-local
    `ocdbt.process_0/d/` file merged into `d/`), and damaging only those loads fine."""
    data = [p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data, f"no data files under {directory}"
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(min(size, path.stat().st_size // 2))


def test_a_checkpoint_whose_data_files_are_cut_short_is_one_checkpoint_error(tmp_path):
    path = saved_tiny_checkpoint(tmp_path / "ckpt")
    cut_data_files(path / checkpoint.PARAMS_ITEM)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert f"the checkpoint {path} is damaged" in message
    assert "OUT_OF_RANGE" in message  # tensorstore's reason, not orbax's wrapper
    assert "write it again" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("item", [checkpoint.CONFIG_ITEM, checkpoint.CLASS_NAMES_ITEM])
def test_a_damaged_json_item_is_one_checkpoint_error_from_every_reader(tmp_path, item):
    path = saved_tiny_checkpoint(tmp_path / "ckpt")
    (path / item / "metadata").write_bytes(b"\x00garbage{")
    reader = load_checkpoint if item == checkpoint.CONFIG_ITEM else checkpoint.load_class_names
    with pytest.raises(CheckpointError, match=f"the checkpoint {path} is damaged"):
        reader(path)
    if item == checkpoint.CONFIG_ITEM:
        with pytest.raises(CheckpointError, match=f"the checkpoint {path} is damaged"):
            checkpoint.load_model_config(path)


def test_a_stored_model_config_that_is_not_a_mapping_is_a_checkpoint_error(tmp_path):
    path = saved_tiny_checkpoint(tmp_path / "ckpt")
    (path / checkpoint.CONFIG_ITEM / "metadata").write_text("[1, 2, 3]")
    with pytest.raises(CheckpointError, match="damaged.*not a model configuration"):
        checkpoint.load_model_config(path)


def run_entry_point(*args):
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_every_entry_point_that_reads_a_damaged_checkpoint_ends_in_one_line(tmp_path):
    damaged = random_teacher(tmp_path / "teacher")  # a demo-sized swin_micro
    cut_data_files(tmp_path / "teacher" / checkpoint.PARAMS_ITEM)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "image.png")
    demo = ["train.py", "--config", "configs/demo.py:smoke", "--config.runs="]
    commands = {
        "export": ["export.py", damaged, str(tmp_path / "out.onnx"), "--format", "onnx"],
        "predict": ["predict.py", damaged, str(tmp_path / "image.png")],
        "convert --export": [
            "convert_timm_weights.py",
            "--export",
            damaged,
            str(tmp_path / "out.safetensors"),
        ],
        "teacher.finetuned": [
            *demo,
            f"--config.teacher.finetuned={damaged}",
            f"--workdir={tmp_path / 'finetuned'}",
        ],
        "teacher.init": [
            *demo,
            f"--config.teacher.init={damaged}",
            f"--workdir={tmp_path / 'init'}",
        ],
    }
    for name, command in commands.items():
        result = run_entry_point(*command)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert f"error: the checkpoint {damaged} is damaged" in result.stderr, name
        # Nothing else: the reads still in flight after the failure used to print "Event
        # loop is closed" tracebacks and "exception was never retrieved" reports after it.
        assert result.stderr.strip().splitlines() == [
            line for line in result.stderr.strip().splitlines() if line.startswith("error:")
        ], (name, result.stderr[-2000:])
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr[-2000:])


def test_a_model_save_that_fills_the_disk_is_one_error_and_leaves_no_partial_save(tmp_path):
    model = swin_flax.create_model("swin_micro", num_classes=10, img_size=32)  # 10 MB
    with small_disk(tmp_path) as disk:
        with pytest.raises(DiskFullError) as caught:
            save_checkpoint(disk / "final_model", model, swin_flax.init_params(model, 0))
        assert str(caught.value) == (
            f"no space left on {disk} while saving the model to {disk / 'final_model'}; "
            "its partial save is removed; free space and rerun"
        )
        assert list(disk.iterdir()) == []
