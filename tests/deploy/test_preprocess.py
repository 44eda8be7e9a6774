"""Deployment preprocesses images as training evaluated them (`swin_flax.deploy.preprocess`):
decoded at data.stored_size (PIL, JPEG draft), then normalised and resized on the device to
img_size; pixel-equal with training's path for predict.py, export --evaluate and the
checkpoint runner, where resizing the original once (the old path) is not."""

import jax
import numpy as np
import pytest
from PIL import Image

import swin_flax
from swin_flax.data.augment import preprocess_eval
from swin_flax.data.image_folder import load_image_folder
from swin_flax.data.images import decode_image
from swin_flax.deploy import image_sets, runners
from swin_flax.deploy.evaluate import flax_predictions
from swin_flax.deploy.preprocess import Preprocessing, preprocess_images
from swin_flax.weights.checkpoint import save_checkpoint


def photo(width, height, seed):
    """A photo-like image: colour fields, edges, fine texture and grain (JPEG compresses it
    as it does a photograph, unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [
        np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6))
        + np.cos(5 * y * rng.uniform(0.5, 2))
        + (x + y > rng.uniform(0.4, 1.2))
        for _ in range(3)
    ]
    texture = 25 * np.sin(x * width / rng.uniform(1.5, 3)) * np.cos(y * height / 2.2)
    image = (
        np.stack(channels, -1) * 60
        + 100
        + texture[..., None]
        + rng.normal(0, 8, (height, width, 3))
    )
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """root/test/<class>/*.jpg: real JPEG files, large enough for libjpeg's draft scaling."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(6):
        folder = root / "test" / ("cat" if i % 2 else "ship")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(200 + 7 * i, 150 + 5 * i, i)).save(folder / f"{i}.jpg", quality=90)
    return root


def test_preprocess_images_is_the_eval_steps_normalise_and_resize(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    decoded = decode_image(tmp_path / "a.png")  # the decoder's own tests: data/test_images.py
    np.testing.assert_array_equal(decoded, pixels)
    batch = preprocess_images([decoded, pixels[:10]], 16)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], preprocess_eval(pixels[None], out_size=16)[0], atol=1e-6)


@pytest.mark.parametrize("stored,img_size", [(64, 32), (40, 64)])  # down, and up, on the device
def test_deployment_inputs_are_pixel_equal_to_training_evaluation(
    stored, img_size, photos, tmp_path
):
    """The model input of predict.py (the checkpoint runner's preprocessing) and of export
    --evaluate (the evaluation set's batches) equals the input training's eval step builds
    from the same files (load_image_folder at stored_size, then preprocess_eval)."""
    train_view = load_image_folder(photos, "test", image_size=stored)
    expected = np.asarray(preprocess_eval(train_view.images, out_size=img_size))

    model = swin_flax.create_model("swin_pico", img_size=img_size, num_classes=2)
    params = swin_flax.init_params(model, 0)
    save_checkpoint(
        tmp_path / "ckpt", model, params, class_names=["cat", "ship"], stored_size=stored
    )
    pre = runners.load_model(tmp_path / "ckpt").preprocessing
    assert pre == Preprocessing(img_size, stored)
    files = sorted((photos / "test").rglob("*.jpg"), key=lambda p: (p.parent.name, p.name))
    predict_input = pre([pre.decode(path) for path in files])
    np.testing.assert_array_equal(predict_input, expected)

    eval_set = image_sets.evaluation_set(photos / "test", ["cat", "ship"], 2)
    export_input = np.concatenate([images for images, _ in eval_set.batches(pre, 4)])
    np.testing.assert_array_equal(export_input, expected)

    # The old path, the original resized once to img_size, is not training's.
    once = preprocess_images([decode_image(path) for path in files], img_size)
    assert np.abs(once - expected).max() > 0.05 and np.abs(once - expected).mean() > 0.005


def test_export_evaluate_scores_the_checkpoint_as_training_evaluation_does(photos, tmp_path):
    """flax_predictions with the checkpoint's preprocessing gives the eval step's classes."""
    model = swin_flax.create_model("swin_pico", img_size=32, num_classes=2)
    params = jax.tree_util.tree_map(lambda p: 4.0 * p, swin_flax.init_params(model, 2))
    eval_set = image_sets.evaluation_set(photos / "test", ["cat", "ship"], 2)
    train_view = load_image_folder(photos, "test", image_size=64)
    with jax.default_matmul_precision("highest"):
        inputs = preprocess_eval(train_view.images, out_size=32)
        expected = np.asarray(model.apply({"params": params}, inputs)).argmax(1)
    got = flax_predictions(model, params, eval_set, preprocessing=Preprocessing(32, 64))
    np.testing.assert_array_equal(got, expected)


def test_in_memory_images_are_stored_as_training_stores_a_tfds_split():
    from swin_flax.data.images import stack_images

    image = photo(90, 70, 3)
    pre = Preprocessing(32, 48)
    np.testing.assert_array_equal(pre.stored(image), stack_images([image], 48, "x")[0])
    assert pre.stored(image).shape == (48, 48, 3)
    np.testing.assert_array_equal(Preprocessing(32).stored(image), image)  # no stored size


def test_old_exports_and_checkpoints_without_a_stored_size_resize_once(tmp_path):
    assert Preprocessing.from_metadata({"img_size": 32}) == Preprocessing(32, None)
    assert Preprocessing.from_metadata({"img_size": 32, "stored_size": 64}).stored_size == 64
    model = swin_flax.create_model("swin_pico", img_size=32, num_classes=2)
    save_checkpoint(tmp_path / "ckpt", model, swin_flax.init_params(model, 0))
    assert runners.load_model(tmp_path / "ckpt").preprocessing == Preprocessing(32, None)
    assert "PIL bilinear resize to 64" in Preprocessing(32, 64).describe()
