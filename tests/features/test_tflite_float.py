"""The shipped quantised MobileNets rebuilt as float Keras models: same vectors, trainable blocks (no Django)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.features.backbones import (
    MOBILENET_V1_FILE,
    MOBILENET_V2_FEATURES,
    MOBILENET_V2_FILE,
    SHIPPED_WEIGHTS_DIR,
    backbone_spec,
    load_backbone,
)
from indexing.features.pipeline import prepare_image
from indexing.features.tflite_float import float_model_from_tflite, layer_name
from tests.conftest import sketch_png

pytestmark = pytest.mark.slow


def sketches(n: int = 6) -> np.ndarray:
    return np.stack([prepare_image(sketch_png(seed), 224, kind="sketch", thin=True) for seed in range(n)])


def test_layer_names_are_the_tflite_scopes() -> None:
    assert layer_name("MobilenetV2/expanded_conv_16/project/add_fold;MobilenetV2/x/Conv2D_Fold") == (
        "expanded_conv_16_project"
    )
    assert layer_name("MobilenetV1/MobilenetV1/Conv2d_13_pointwise/Relu6;MobilenetV1/y") == "Conv2d_13_pointwise"
    assert layer_name("MobilenetV2/expanded_conv_15/add") == "expanded_conv_15_add"
    assert layer_name("MobilenetV2/Conv/Relu6") == "Conv"


@pytest.mark.parametrize(
    ("float_name", "tflite_slice"),
    [("mobilenet_v1_float", slice(0, 1024)), ("mobilenet_v2_float", slice(1024, 2304))],
)
def test_float_rebuild_gives_the_tflite_vectors(float_name: str, tflite_slice: slice) -> None:
    images = sketches()
    rebuilt = load_backbone(float_name)
    assert rebuilt.dim == backbone_spec(float_name).dim
    floats = rebuilt.embed(images)
    quantised = load_backbone("mobilenet_v1v2").embed(images)[:, tflite_slice]
    quantised = quantised / np.linalg.norm(quantised, axis=1, keepdims=True)
    cosines = np.sum(floats * quantised, axis=1)
    # Equal up to the 8-bit rounding of the TFLite activations...
    assert cosines.min() > 0.99
    # ...and closer to their own image's TFLite vector than two different sketches are to each other.
    assert cosines.min() > float(np.max(np.triu(floats @ floats.T, 1)))


def test_the_cut_layer_splits_the_float_v2_into_front_and_two_trainable_blocks() -> None:
    from indexing.features.training import fine_tune, fit_head, frozen_and_tail

    spec = backbone_spec("mobilenet_v2_float")
    assert spec.trainable
    model = load_backbone("mobilenet_v2_float").model  # type: ignore[attr-defined]
    frozen, tail = frozen_and_tail(model, spec.cut_layer or "")
    scale, offset = spec.pixel_scaling or (1.0, 0.0)
    images = sketches(4).astype(np.float32) * scale + offset
    cache = np.asarray(frozen(images, training=False))
    assert cache.shape == (4, 7, 7, 160)
    np.testing.assert_allclose(np.asarray(tail(cache)), np.asarray(model(images)), rtol=1e-4, atol=1e-4)
    tail_names = {layer.name for layer in tail.layers}
    assert {"expanded_conv_15_expand", "expanded_conv_16_project", "Conv_1"} <= tail_names
    assert "expanded_conv_14_expand" not in tail_names
    targets = np.array([0, 1, 0, 1])
    pooled = np.asarray(tail(cache))
    fit = fit_head(1, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), targets, num_classes=2, epochs=1)
    last, first = model.get_layer("Conv_1"), model.get_layer("Conv")
    last_before, first_before = last.get_weights()[0].copy(), first.get_weights()[0].copy()
    fine_tune(tail, fit.head, cache, targets, epochs=1, batch_size=2)
    assert not np.allclose(last.get_weights()[0], last_before)
    np.testing.assert_array_equal(first.get_weights()[0], first_before)


def test_an_operation_the_rebuild_does_not_know_is_named(tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))  # FULLY_CONNECTED
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    path = tmp_path / "dense.tflite"
    path.write_bytes(converter.convert())
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        float_model_from_tflite(path, input_size=8, name="x")
    with pytest.raises(FileNotFoundError, match="not found"):
        float_model_from_tflite(tmp_path / "missing.tflite", name="x")


def test_a_named_end_tensor_that_is_not_there_is_an_error() -> None:
    with pytest.raises(ValueError, match="no average pool named"):
        float_model_from_tflite(SHIPPED_WEIGHTS_DIR / MOBILENET_V1_FILE, until=MOBILENET_V2_FEATURES, name="x")
    assert (SHIPPED_WEIGHTS_DIR / MOBILENET_V2_FILE).is_file()
