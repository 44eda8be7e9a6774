"""predict.py: top-5 with class names for a checkpoint and for exported files (the same
probabilities), one error line for a corrupt image or a path that is not a model."""

import importlib.util
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import swin_flax
from swin_flax import cli
from swin_flax.weights.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
NAMES = [f"class_{c}" for c in "abcdefg"]


def run_predict(argv, capsys):
    spec = importlib.util.spec_from_file_location("predict_cli", ROOT / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = cli.run(module.main, [str(a) for a in argv])
    return code, capsys.readouterr()


def same_top5(a, b):
    a, b = top5(a), top5(b)
    assert list(a) == list(b)
    for image in a:
        assert [r[1:] for r in a[image]] == [r[1:] for r in b[image]]  # same classes, order
        np.testing.assert_allclose([r[0] for r in a[image]], [r[0] for r in b[image]], atol=0.02)
    return True


def top5(text):
    """{image: [(probability, name)]} parsed from predict.py's output."""
    result, current = {}, None
    for line in text.splitlines():
        match = re.match(r"\s+\d\.\s+([\d.]+)%\s+(\S+) \((\d+)\)", line)
        if match:
            result[current].append((float(match[1]), match[2], int(match[3])))
        else:
            current = line
            result[current] = []
    return result


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    model = swin_flax.create_model("swin_pico", num_classes=7)
    params = swin_flax.init_params(model, 3)
    params = jax.tree_util.tree_map(lambda p: p * 3.0, params)  # spread the probabilities
    save_checkpoint(root / "ckpt", model, params, class_names=NAMES)
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate([(40, 50), (32, 32)]):  # any size: resized to img_size
        path = root / f"img{i}.{'jpg' if i else 'png'}"
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
        images.append(path)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return root, images


def test_checkpoint_prints_top5_with_class_names(setup, capsys):
    root, images = setup
    code, out = run_predict([root / "ckpt", *images], capsys)
    assert code == 0, out.err
    result = top5(out.out)
    assert list(result) == [str(p) for p in images]
    for rows in result.values():
        assert len(rows) == 5 and all(name in NAMES for _, name, _ in rows)
        probs = [p for p, _, _ in rows]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
        assert all(NAMES[index] == name for _, name, index in rows)


@pytest.mark.slow
def test_exported_stablehlo_predicts_like_the_checkpoint(setup, tmp_path, capsys):
    from swin_flax.deploy.export import export_checkpoint

    root, images = setup
    export_checkpoint(root / "ckpt", tmp_path / "m.stablehlo", "stablehlo", batch=None)
    _, reference = run_predict([root / "ckpt", *images], capsys)
    code, out = run_predict([tmp_path / "m.stablehlo", *images], capsys)
    assert code == 0 and same_top5(out.out, reference.out)


@pytest.mark.slow
@pytest.mark.export
@pytest.mark.torch
def test_exported_onnx_predicts_like_the_checkpoint(setup, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from swin_flax.deploy.export import export_checkpoint

    root, images = setup
    export_checkpoint(root / "ckpt", tmp_path / "m.onnx", "onnx", batch=1)
    _, reference = run_predict([root / "ckpt", *images], capsys)
    code, out = run_predict([tmp_path / "m.onnx", *images], capsys)
    assert code == 0 and same_top5(out.out, reference.out)


@pytest.mark.parametrize("case", ["missing image", "not a model", "empty folder"])
def test_bad_input_is_one_error_line(case, setup, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SWIN_FLAX_DEBUG", raising=False)
    root, images = setup
    (tmp_path / "empty").mkdir()
    argv = {
        "missing image": [root / "ckpt", tmp_path / "nope.jpg"],
        "not a model": [tmp_path, images[0]],
        "empty folder": [root / "ckpt", tmp_path / "empty"],
    }[case]
    code, out = run_predict(argv, capsys)
    assert code == 2 and out.out == ""
    assert out.err.startswith("error:") and out.err.count("\n") == 1
    expected = {
        "missing image": "nope.jpg: no such image file",
        "not a model": "not a swin_flax checkpoint",
        "empty folder": "empty holds no images",
    }[case]
    assert expected in out.err


def test_an_unreadable_image_is_one_line_and_the_others_are_still_predicted(setup, capsys):
    root, images = setup
    code, out = run_predict([root / "ckpt", images[0], root / "corrupt.jpg", images[1]], capsys)
    assert code == 2  # one image failed: the exit code says so, after the others' output
    assert list(top5(out.out)) == [str(images[0]), str(images[1])]
    assert out.err.count("\n") == 1
    assert out.err.startswith("error: ") and "corrupt.jpg: not a readable image" in out.err


def test_a_folder_stands_for_every_image_under_it(setup, tmp_path, capsys):
    root, images = setup
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    (folder / "b" / "two.png").write_bytes(images[0].read_bytes())
    (folder / "one.jpg").write_bytes(images[1].read_bytes())
    (folder / ".hidden" / "x.png").write_bytes(images[0].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    code, out = run_predict([root / "ckpt", folder], capsys)
    assert code == 0, out.err
    assert list(top5(out.out)) == [str(folder / "b" / "two.png"), str(folder / "one.jpg")]


def test_a_model_without_class_names_prints_indices_and_says_so(tmp_path, capsys):
    model = swin_flax.create_model("swin_pico", num_classes=3)
    save_checkpoint(tmp_path / "ckpt", model, swin_flax.init_params(model, 0))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    code, out = run_predict([tmp_path / "ckpt", tmp_path / "a.png", "--top", "3"], capsys)
    assert code == 0 and "stores no class names: classes are shown by their index" in out.err
    assert sorted(re.findall(r"%  class (\d)$", out.out, re.M)) == ["0", "1", "2"]


def test_a_finished_training_stage_predicts_with_its_class_names(tmp_path, capsys):
    """What train.py leaves: STAGE/final_model/ with the training data's class names, and
    the stage directory itself accepted; an unfinished stage is named as such."""
    from swin_flax.data.dataset import ArrayDataset
    from swin_flax.pipeline import stages
    from swin_flax.training.loop import StageResult

    model = swin_flax.create_model("swin_pico", num_classes=3)
    train = ArrayDataset(
        np.zeros((3, 8, 8, 3), np.uint8), np.arange(3, dtype=np.int32), 3, ("cat", "dog", "ship")
    )
    result = StageResult(swin_flax.init_params(model, 1), 5, True, {})
    stages.finish_stage(tmp_path / "teacher", model, result, train.class_names)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "a.png")
    for given in (tmp_path / "teacher" / "final_model", tmp_path / "teacher"):
        code, out = run_predict([given, tmp_path / "a.png", "--top", "3"], capsys)
        assert code == 0, out.err
        rows = top5(out.out)[str(tmp_path / "a.png")]
        assert sorted(name for _, name, _ in rows) == ["cat", "dog", "ship"]
    (tmp_path / "student" / "checkpoints" / "40").mkdir(parents=True)
    code, out = run_predict([tmp_path / "student", tmp_path / "a.png"], capsys)
    assert code == 2 and "the training stage" in out.err and "has not finished" in out.err
    assert "newest train-state checkpoint is step 40" in out.err and "Rerun train.py" in out.err


def test_a_file_that_is_not_an_export_is_refused(setup, tmp_path, capsys):
    root, images = setup
    (tmp_path / "model.bin").write_bytes(b"\x00" * 64)
    code, out = run_predict([tmp_path / "model.bin", images[0]], capsys)
    assert code == 2 and "neither a checkpoint directory nor an exported model" in out.err
