"""Evaluation (`swin_flax.training.evaluate`): exact top-1 over every example of a split,
whatever the batch size, resident or streamed, and the throughput measurement's report."""

import jax
import numpy as np
import pytest

import swin_flax
from swin_flax.data.augment import preprocess_eval
from swin_flax.data.dataset import ArrayDataset
from swin_flax.data.image_folder import load_image_folder
from swin_flax.training import evaluate
from tests.helpers import streamed_folder, tiny_image_folder, tiny_model


def predictions(model, params, dataset) -> np.ndarray:
    """The model's classes for every example, computed directly, without evaluate.py."""
    images = preprocess_eval(dataset.images, out_size=model.img_size)
    logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, images)
    return np.argmax(np.asarray(logits), -1)


@pytest.fixture(scope="module")
def model_params_data():
    model = tiny_model()
    params = swin_flax.init_params(model, 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, 10).astype(np.int32)
    return model, params, ArrayDataset(images=images, labels=labels, num_classes=3)


@pytest.mark.parametrize("batch_size", [3, 10, 16])  # a padded last batch, exact, one batch
def test_top1_is_the_fraction_of_examples_the_model_gets_right(model_params_data, batch_size):
    model, params, data = model_params_data
    expected = float(np.mean(predictions(model, params, data) == data.labels))
    assert evaluate.top1_accuracy(model, params, data, batch_size=batch_size) == expected


def test_labels_set_to_the_predictions_give_a_top1_of_one(model_params_data):
    model, params, data = model_params_data
    right = ArrayDataset(data.images, predictions(model, params, data).astype(np.int32), 3)
    top1 = evaluate.make_top1_fn(model, right, batch_size=4)
    assert top1(params) == 1.0


def test_throughput_reports_the_median_with_its_spread(model_params_data):
    model, params, _ = model_params_data
    result = evaluate.measure_throughput(model, params, batch_size=2, repeats=3, warmup=1)
    assert result["min"] <= result["images_per_second"] <= result["max"]
    assert result["images_per_second"] > 0 and isinstance(result["noisy"], bool)
    assert (result["batch_size"], result["dtype"]) == (2, "float32")
    assert result["device"] == jax.devices()[0].device_kind


@pytest.mark.parametrize("batch_size", [3, 16])
def test_a_streamed_split_scores_as_its_resident_copy(model_params_data, tmp_path, batch_size):
    model, params, _ = model_params_data
    root = tiny_image_folder(tmp_path, n=10, classes=3, side=8, splits=("test",))
    resident = load_image_folder(root, "test")
    streamed = streamed_folder(root, "test", workers=2)
    expected = float(np.mean(predictions(model, params, resident) == resident.labels))
    top1 = evaluate.make_top1_fn(model, streamed, batch_size=batch_size)
    assert (
        top1(params)
        == expected
        == evaluate.top1_accuracy(model, params, resident, batch_size=batch_size)
    )
    assert top1(params) == expected  # a streamed split is read again for every evaluation
