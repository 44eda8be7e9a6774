"""Block importance (swin_flax/pipeline/block_importance.py): a block whose residual branches are zero
is worth nothing, skipping a pair is the student without it, the files and the command."""

import numpy as np
import pytest
from flax import traverse_util

import swin_flax
from swin_flax import cli
from swin_flax.data import ArrayDataset, Splits
from swin_flax.data.sizes import SplitSizes
from swin_flax.errors import UserInputError
from swin_flax.pipeline import block_importance as blocks
from swin_flax.pipeline import plan
from swin_flax.settings import RunSettings
from swin_flax.weights import keep_blocks as kb
from tests.helpers import smoke_config


def small_teacher(depths=(2, 3)):
    """16 px, 8x8 tokens in 4x4 windows: stage 0 shifts its windows, stage 1 (4x4) does not."""
    return swin_flax.SwinTransformer(
        swin_flax.SwinConfig(
            img_size=16,
            patch_size=2,
            embed_dim=8,
            depths=depths,
            num_heads=(1, 2),
            window_size=4,
            num_classes=4,
            drop_path_rate=0.0,
        )
    )


def images(n=24, seed=0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset(
        images=rng.integers(0, 256, (n, 16, 16, 3)).astype(np.uint8),
        labels=rng.integers(0, 4, n).astype(np.int32),
        num_classes=4,
    )


def with_zero_branches(params, stage, block):
    """The block's attention and MLP branches end in all-zero layers: it adds nothing."""
    flat = traverse_util.flatten_dict(params, sep="/")
    for layer in ("attn/proj", "mlp/fc2"):
        for leaf in ("kernel", "bias"):
            key = f"layers_{stage}/blocks_{block}/{layer}/{leaf}"
            flat[key] = np.zeros_like(flat[key])
    return traverse_util.unflatten_dict(flat, sep="/")


@pytest.mark.slow  # compiles a Swin
def test_a_block_whose_residual_branches_are_zero_is_worth_nothing():
    model = small_teacher()
    params = with_zero_branches(swin_flax.init_params(model, 0), stage=1, block=1)
    importance = blocks.measure(model, params, images(), source="random images", batch_size=10)
    by_unit = {(s.stage, s.blocks): s for s in importance.skips}
    dead = by_unit[(1, (1,))]
    assert (dead.mse, dead.kl, dead.top1) == (0.0, 0.0, importance.top1)
    alive = [s for s in importance.skips if s.blocks != (1,) or s.stage != 1]
    assert all(s.kl > 0 and s.mse > 0 for s in alive)
    # the pairs are measured only where windows shift
    assert sorted(u for u in by_unit if len(u[1]) == 2) == [(0, (0, 1))]
    assert importance.shifted == (True, False) and importance.images == 24


@pytest.mark.slow  # compiles a Swin
@pytest.mark.parametrize("pair, kept", [((2, 3), "0,1;0,1"), ((1, 2), "0,3;0,1")])
def test_skipping_a_pair_is_the_student_that_drops_it(pair, kept):
    teacher = small_teacher(depths=(4, 2))
    params = swin_flax.init_params(teacher, 1)
    x = np.random.default_rng(2).normal(size=(3, 16, 16, 3)).astype(np.float32)
    skipped = teacher.apply({"params": blocks.skipped_params(params, 0, pair)}, x)
    kept = kb.KeptBlocks(kb.parse_blocks(kept), copy_head=True)
    kb.check_blocks(kept.blocks, teacher.depths, kb.shifted_stages(teacher.config))
    student = teacher.clone(config=teacher.config.replace(depths=kept.depths))
    student_params = kb.transfer_kept(params, swin_flax.init_params(student, 3), kept)
    np.testing.assert_allclose(student.apply({"params": student_params}, x), skipped, atol=1e-6)


def test_skipping_an_unknown_block_is_an_error():
    params = swin_flax.init_params(small_teacher(), 0)
    with pytest.raises(UserInputError, match="no layers_1/blocks_3/attn/proj"):
        blocks.skipped_params(params, 1, (3,))


@pytest.mark.slow  # compiles a Swin
def test_the_table_json_and_plot(tmp_path):
    model = small_teacher()
    importance = blocks.measure(
        model, swin_flax.init_params(model, 0), images(), source="random", batch_size=32
    )
    path = blocks.write_importance(importance, tmp_path, command="python -m ... X")
    text = path.read_text()
    assert (
        "| none (the teacher) |" in text and "| stage 0, blocks 0+1 | unshifted/shifted |" in text
    )
    assert text.count("\n| stage ") == len(importance.skips) == 2 + 1 + 3
    assert "Command: `python -m ... X`" in text
    assert blocks.load_importance(tmp_path / "block_importance.json") == importance
    assert (tmp_path / "block_importance.png").read_bytes()[:4] == b"\x89PNG"


def test_the_plan_measures_only_when_asked():
    def measures(**changes) -> bool:
        config = smoke_config()
        config.runs = "transfer"
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            setattr(getattr(config, section) if section else config, name, value)
        settings = RunSettings.from_config(config)
        return plan.build_plan(settings, "/w", SplitSizes(96, 16, 100)).block_importance

    assert not measures()
    assert measures(sweep="student.keep_blocks=even,importance")  # a row keeps by importance
    assert measures(**{"teacher.block_importance": True})


@pytest.mark.slow  # compiles a Swin
def test_the_pipeline_measures_never_on_the_test_split(tmp_path):
    model = small_teacher()
    params = swin_flax.init_params(model, 0)
    splits = Splits(train=images(40, seed=1), test=images(8, seed=2), validation=images(12))
    measured = blocks.after_fine_tuning(model, params, splits, 0, 32, tmp_path)
    assert (measured.images, measured.source) == (12, "the validation carve-out")
    assert (tmp_path / "block_importance.md").exists()
    splits = Splits(train=images(40, seed=1), test=images(8, seed=2))
    measured = blocks.after_fine_tuning(model, params, splits, 0, 32, tmp_path)
    assert measured.images == 40 and measured.source.startswith("training images")


def write_folder(root, split, classes, per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.slow  # compiles a Swin
def test_the_command_on_a_checkpoint_and_an_image_folder(tmp_path, capsys):
    model = small_teacher()
    swin_flax.save_checkpoint(tmp_path / "teacher", model, swin_flax.init_params(model, 0))
    for split, per_class in (("train", 5), ("validation", 3), ("test", 2)):
        write_folder(tmp_path / "photos", split, ["a", "b", "c", "d"], per_class)
    argv = [str(tmp_path / "teacher"), "--data", str(tmp_path / "photos"), "--out"]
    assert blocks.main(argv + [str(tmp_path / "out")]) == 0
    assert "| stage 1, block 2 |" in capsys.readouterr().out
    measured = blocks.load_importance(tmp_path / "out" / "block_importance.json")
    assert (measured.images, measured.source) == (12, f"{tmp_path / 'photos'}/validation")
    # a second measurement into the same --out is refused before anything is measured
    assert cli.run(blocks.main, argv + [str(tmp_path / "out"), "--split", "test"]) == 2
    assert "already holds block_importance.json, block_importance.md" in capsys.readouterr().err
    # without a validation split: a training subset; the test split only when asked
    (tmp_path / "photos" / "validation").rename(tmp_path / "held")
    assert blocks.main(argv + [str(tmp_path / "train_out")]) == 0
    measured = blocks.load_importance(tmp_path / "train_out" / "block_importance.json")
    assert (measured.images, measured.source) == (20, f"20 images of {tmp_path / 'photos'}/train")
    assert blocks.main(argv + [str(tmp_path / "test_out"), "--split", "test"]) == 0
    assert "blocks chosen by it have seen it" in capsys.readouterr().err
    # three classes for a four-class teacher, and no --out for a checkpoint: one line each
    write_folder(tmp_path / "three", "test", ["a", "b", "c"])
    three = [str(tmp_path / "teacher"), "--data", str(tmp_path / "three"), "--out", "x"]
    assert cli.run(blocks.main, three + ["--split", "test"]) == 2
    assert "have 3 classes, the teacher 4" in capsys.readouterr().err
    assert cli.run(blocks.main, argv[:3]) == 2
    assert "is a checkpoint: say where the table goes (--out)" in capsys.readouterr().err


@pytest.mark.slow
def test_importance_drops_the_block_that_adds_nothing():
    model = small_teacher(depths=(4, 2))
    params = with_zero_branches(swin_flax.init_params(model, 0), stage=1, block=0)
    costs = blocks.measure(model, params, images(), source="random", batch_size=32).costs()
    assert costs[(1, (0,))] == 0.0
    assert kb.important_blocks((4, 2), (4, 1), (True, False), costs) == ((0, 1, 2, 3), (1,))


@pytest.mark.slow
def test_the_pipeline_measures_the_teacher_and_sweeps_keep_blocks_policies(tmp_path, mock_tfds):
    import json

    from swin_flax.pipeline.run import run_pipeline

    config = smoke_config()  # teacher swin_pico (2, 2, 4, 2), students of swin_pico_n's depths
    config.runs = "transfer"
    config.evaluate_teacher = False
    config.teacher.block_importance = True
    config.sweep = "student.keep_blocks=even,importance"
    config.distill.peak_lr = 1e-30  # the students keep their initialisation
    with mock_tfds.testing.mock_data(num_examples=32):
        rows = run_pipeline(config, tmp_path)
    assert [r["model"] for r in rows] == [
        "swin_pico_n (keep_blocks=even)",
        "swin_pico_n (keep_blocks=importance)",
    ]
    assert "| stage 2, block 3 |" in (tmp_path / "block_importance.md").read_text()
    importance = blocks.load_importance(tmp_path / "block_importance.json")
    chosen = kb.important_blocks((2, 2, 4, 2), (2, 2, 2, 2), importance.shifted, importance.costs())
    _, teacher = swin_flax.load_checkpoint(tmp_path / "teacher" / "final_model")
    stage = json.loads((tmp_path / rows[1]["stage"] / "stage_config.json").read_text())
    assert stage["student"]["keep_blocks"] == "importance"
    # the command on the work directory: the same images, its own directory, the run's table kept
    table = (tmp_path / "block_importance.md").read_text()
    with mock_tfds.testing.mock_data(num_examples=32):
        assert blocks.main([str(tmp_path)]) == 0
    assert (tmp_path / "block_importance.md").read_text() == table
    again = blocks.load_importance(tmp_path / "block_importance_command" / "block_importance.json")
    assert again.images == importance.images and f"of {tmp_path} (" in again.source
    costs = importance.costs()
    np.testing.assert_allclose([again.costs()[k] for k in costs], list(costs.values()), rtol=1e-4)
    _, student = swin_flax.load_checkpoint(tmp_path / rows[1]["stage"] / "final_model")
    for k, j in enumerate(chosen[2]):
        np.testing.assert_array_equal(
            student["layers_2"][f"blocks_{k}"]["mlp"]["fc1"]["kernel"],
            teacher["layers_2"][f"blocks_{j}"]["mlp"]["fc1"]["kernel"],
        )
