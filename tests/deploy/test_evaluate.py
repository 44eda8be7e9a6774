"""Measuring an exported file on labelled images (`swin_flax.deploy.evaluate`): top-1 counted
against known labels, the Flax checkpoint's top-1 on the same images, their agreement, size
and latency."""

import time

import jax
import numpy as np
import pytest
from PIL import Image

import swin_flax
from swin_flax.deploy import evaluate, image_sets
from swin_flax.deploy.preprocess import preprocess_images
from swin_flax.deploy.runners import Runner
from swin_flax.errors import UserInputError
from swin_flax.weights.checkpoint import save_checkpoint
from tests.helpers import tiny_model

NAMES = ["ant", "bee", "cow"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A tiny checkpoint, and 12 images filed so that the model is right on exactly 7:
    images 0-6 in the folder of the class the model predicts, 7-11 in another one."""
    root = tmp_path_factory.mktemp("evaluate")
    model = tiny_model(num_classes=3)
    params = jax.tree_util.tree_map(lambda p: p * 4.0, swin_flax.init_params(model, 1))
    save_checkpoint(root / "ckpt", model, params, class_names=NAMES)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    with jax.default_matmul_precision("highest"):
        logits = model.apply({"params": params}, preprocess_images(list(pixels), 8))
    predicted = np.asarray(logits).argmax(1)
    labels = np.where(np.arange(12) < 7, predicted, (predicted + 1) % 3)
    for i, (image, label) in enumerate(zip(pixels, labels)):
        folder = root / "images" / NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")  # lossless: same pixels back
    return root, model, params, predicted


def test_flax_top1_counts_the_known_hits(labelled):
    root, model, params, _ = labelled
    eval_set = image_sets.evaluation_set(root / "images", NAMES, 3)
    flax = evaluate.flax_predictions(model, params, eval_set, batch_size=5)
    assert len(flax) == 12
    assert evaluate.percent(flax == eval_set.labels) == pytest.approx(100 * 7 / 12)


@pytest.mark.slow  # a StableHLO export and 12 images through it: about 3 s
def test_an_exported_file_is_counted_on_every_image(labelled, tmp_path):
    from swin_flax.deploy.export import export_checkpoint

    root, *_ = labelled
    report = export_checkpoint(
        root / "ckpt", tmp_path / "m.zip", "stablehlo", evaluate=root / "images"
    )
    result = report.evaluation
    assert result.images == 12
    assert result.top1 == pytest.approx(100 * 7 / 12)
    assert result.flax_top1 == pytest.approx(100 * 7 / 12)
    assert result.agreement == 100.0 and result.drop == pytest.approx(0.0)
    assert result.size_mb == pytest.approx((tmp_path / "m.zip").stat().st_size / 1e6)
    assert set(result.latency_ms) == {1, 32} and all(ms > 0 for ms in result.latency_ms.values())
    assert "first images of 12 images in 3 class folders" in report.check_source
    assert "top-1 58.33% (Flax checkpoint 58.33%, drop +0.00 points)" in report.summary()


def test_agreement_and_drop_of_a_file_that_disagrees(labelled, monkeypatch):
    root, model, params, predicted = labelled
    eval_set = image_sets.evaluation_set(root / "images", NAMES, 3)
    flax = evaluate.flax_predictions(model, params, eval_set)

    def always_class_0(images):
        return np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (len(images), 1))

    runner = Runner(always_class_0, {"img_size": 8, "input_layout": "NHWC"}, None)
    monkeypatch.setattr(evaluate, "load_model", lambda *args, **kwargs: runner)
    monkeypatch.setattr(evaluate, "latency_ms", lambda *args: {1: 1.0, 32: 2.0})
    (root / "fake.bin").write_bytes(b"1234")
    result = evaluate.evaluate_file(root / "fake.bin", "onnx", eval_set, flax)
    labels = eval_set.labels
    assert result.top1 == pytest.approx(100 * np.mean(labels == 0))
    assert result.agreement == pytest.approx(100 * np.mean(flax == 0))
    assert result.drop == pytest.approx(100 * 7 / 12 - result.top1)
    assert result.size_mb == 4e-6


def test_latency_is_the_median_of_timed_calls_after_a_warm_up():
    calls = []

    def run(images):
        calls.append(len(images))
        time.sleep(0.05 if len(calls) == 1 else 0.002)  # a slow first call: the warm-up

    ms = evaluate.median_latency_ms(run, np.zeros((4, 1)))
    assert 1.5 <= ms < 40  # the 50 ms warm-up is not counted
    assert evaluate._MIN_REPEATS + 1 <= len(calls) <= evaluate._MAX_REPEATS + 1


def test_a_folder_with_a_subset_of_the_classes_is_scored_by_name(tmp_path, capsys):
    """Issue 29's case: a cat/dog/ship model, a folder with cat/ship only. By name the
    top-1 is 5 of 16 (31.25%); by position (ship taken as dog) it would be 18.75%."""
    names = ["cat", "dog", "ship"]
    model = tiny_model(num_classes=3)
    params = jax.tree_util.tree_map(lambda p: p * 4.0, swin_flax.init_params(model, 1))
    pixels = np.random.default_rng(1).integers(0, 256, (400, 8, 8, 3), dtype=np.uint8)
    with jax.default_matmul_precision("highest"):
        logits = model.apply({"params": params}, preprocess_images(list(pixels), 8))
    predicted = np.asarray(logits).argmax(1)
    by_class = {c: list(pixels[predicted == c]) for c in (0, 2)}
    assert len(by_class[0]) >= 9 and len(by_class[2]) >= 7  # the seed gives both
    # cat: 3 predicted cat (right), 5 predicted ship; ship: 2 predicted ship (right), 6 cat
    folders = {
        "cat": by_class[0][:3] + by_class[2][:5],
        "ship": by_class[2][5:7] + by_class[0][3:9],
    }
    for name, images in folders.items():
        (tmp_path / "eval" / name).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / "eval" / name / f"{i:02d}.png")
    eval_set = image_sets.evaluation_set(tmp_path / "eval", names, 3)
    flax = evaluate.flax_predictions(model, params, eval_set)
    assert evaluate.percent(flax == eval_set.labels) == 31.25
    with pytest.raises(UserInputError, match="has 2 classes but the model has 3 outputs"):
        image_sets.evaluation_set(tmp_path / "eval", None, 3)  # no names: refused, not 18.75%
