"""A training stage given where a model is expected (`swin_flax.deploy.stage_dirs`): a
finished stage's final_model/ is used, an unfinished stage is named as one, with the
command that finishes it, whichever part of it was given."""

import numpy as np
import pytest

import swin_flax
from swin_flax.deploy import stage_dirs
from swin_flax.errors import CheckpointError
from swin_flax.weights.checkpoint import save_checkpoint


def test_the_stage_layout_names_are_the_pipelines():
    from swin_flax.pipeline import stages

    assert stage_dirs.FINAL_MODEL_DIR == stages.FINAL_MODEL_DIR
    assert stage_dirs.STAGE_CONFIG_FILE == stages.STAGE_CONFIG_FILE
    assert stage_dirs.STAGE_DONE_FILE == stages.STAGE_DONE_FILE
    import inspect

    from swin_flax.training import loop

    assert f'stage_dir / "{stage_dirs.CHECKPOINTS_DIR}"' in inspect.getsource(loop.train_stage)


@pytest.fixture
def unfinished(tmp_path):
    stage = tmp_path / "student_transfer_kd"
    (stage / "checkpoints" / "120").mkdir(parents=True)
    (stage / "checkpoints" / "80").mkdir()
    (stage / "stage_config.json").write_text("{}")
    return stage


@pytest.mark.parametrize("given", ["stage", "checkpoints", "one checkpoint", "final_model"])
def test_an_unfinished_stage_says_so_and_how_to_finish_it(given, unfinished):
    path = {
        "stage": unfinished,
        "checkpoints": unfinished / "checkpoints",
        "one checkpoint": unfinished / "checkpoints" / "80",
        "final_model": unfinished / "final_model",
    }[given]
    with pytest.raises(CheckpointError) as caught:
        stage_dirs.model_directory(path)
    message = str(caught.value)
    assert message.startswith(f"the training stage {unfinished} has not finished")
    assert "newest train-state checkpoint is step 120" in message
    assert "Rerun train.py with the same --config and --workdir" in message
    assert f"then give {unfinished / 'final_model'}" in message


def test_a_finished_stage_gives_its_final_model(tmp_path, capsys):
    stage = tmp_path / "teacher"
    model = swin_flax.create_model("swin_pico", num_classes=2)
    save_checkpoint(stage / "final_model", model, swin_flax.init_params(model, 0))
    (stage / "checkpoints" / "9").mkdir(parents=True)
    assert stage_dirs.model_directory(stage / "final_model") == stage / "final_model"
    assert capsys.readouterr().err == ""
    assert stage_dirs.model_directory(stage) == stage / "final_model"
    assert stage_dirs.model_directory(stage / "checkpoints") == stage / "final_model"
    assert "using its finished model" in capsys.readouterr().err


def test_a_finished_stage_without_its_final_model_says_a_rerun_rebuilds_it(unfinished):
    (unfinished / "stage_done.json").write_text("{}")
    with pytest.raises(CheckpointError, match="is finished but its final_model/ is missing"):
        stage_dirs.model_directory(unfinished)


def test_anything_else_is_left_to_the_checkpoint_loader(tmp_path):
    (tmp_path / "notes").mkdir()
    assert stage_dirs.model_directory(tmp_path / "notes") == tmp_path / "notes"
    assert stage_dirs.model_directory(tmp_path / "absent") == tmp_path / "absent"
    np.testing.assert_equal(stage_dirs.model_directory(str(tmp_path)), tmp_path)
