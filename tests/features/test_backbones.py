from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexing.features import backbones
from indexing.features.backbones import (
    Backbone,
    WeightsUnavailableError,
    available_backbones,
    backbone_spec,
    l2_normalize,
    load_backbone,
)
from indexing.features.preprocess import load_image, preprocess_sketch
from indexing.features.runtimes import ConcatBackbone, TFLiteBackbone

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mobilenet() -> Backbone:
    return load_backbone("mobilenet_v1")


def test_importing_the_package_loads_no_tensorflow_or_django() -> None:
    code = (
        "import sys, indexing.features, indexing.features.backbones, indexing.features.pipeline; "
        "print(sorted({'tensorflow', 'keras', 'django', 'ai_edge_litert'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_registry_lists_the_required_backbones() -> None:
    assert {"mobilenet_v1", "mobilenet_v1v2", "inception_v3"} <= set(available_backbones())
    assert backbone_spec("inception_v3").dim == 2048
    assert backbone_spec("mobilenet_v1").input_size == 224


def test_unknown_backbone_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="'vgg99'"):
        load_backbone("vgg99")


def test_l2_normalize_leaves_zero_rows_zero() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


# --------------------------------------------------------------------------------------------- mobilenet_v1


def test_mobilenet_describes_itself(mobilenet: Backbone) -> None:
    assert isinstance(mobilenet, Backbone)
    assert (mobilenet.name, mobilenet.input_size, mobilenet.dim, mobilenet.weights) == (
        "mobilenet_v1",
        224,
        1024,
        "shipped",
    )
    # MobileNetV1 1.0 without its classifier: ~3.2 M weights (BN folded into the convolutions).
    assert 3_100_000 < mobilenet.param_count < 3_300_000


def test_mobilenet_embeds_l2_normalised_float32(mobilenet: Backbone) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    vectors = mobilenet.embed(images)
    assert vectors.shape == (3, 1024)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_mobilenet_is_deterministic_and_batch_independent(mobilenet: Backbone) -> None:
    images = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    batch = mobilenet.embed(images)
    np.testing.assert_array_equal(batch, mobilenet.embed(images))
    np.testing.assert_array_equal(batch[1:], mobilenet.embed(images[1:]))


def test_mobilenet_resize_mode_matches_loop_mode(mobilenet: Backbone) -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    resized = load_backbone("mobilenet_v1", num_threads=1, batch_mode="resize")
    np.testing.assert_allclose(resized.embed(images), mobilenet.embed(images), atol=1e-6)


def test_mobilenet_empty_batch(mobilenet: Backbone) -> None:
    assert mobilenet.embed(np.zeros((0, 224, 224, 3), dtype=np.uint8)).shape == (0, 1024)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((1, 299, 299, 3), np.uint8, "299"),
        ((224, 224, 3), np.uint8, r"\(224, 224, 3\)"),
        ((1, 224, 224, 3), np.float32, "float32"),
    ],
)
def test_mobilenet_rejects_wrong_input(mobilenet: Backbone, shape: tuple[int, ...], dtype: type, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mobilenet.embed(np.zeros(shape, dtype=dtype))


def test_mobilenet_rejects_other_input_sizes() -> None:
    with pytest.raises(ValueError, match="input_size=160"):
        load_backbone("mobilenet_v1", input_size=160)


def test_mobilenet_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="missing.tflite"):
        load_backbone("mobilenet_v1", weights=str(tmp_path / "missing.tflite"))


def _shifted(img: Image.Image) -> Image.Image:
    # A slightly different drawing of the same thing: rotated by 4 degrees and moved, on a larger canvas.
    canvas = Image.new("L", (img.width + 40, img.height + 40), 255)
    canvas.paste(img.convert("L").rotate(4, fillcolor=255), (25, 10))
    return canvas


def test_similar_sketches_are_closer_than_different_ones(mobilenet: Backbone, tu_berlin: Path) -> None:
    pairs = [("ant", "sun"), ("bicycle", "fish"), ("guitar", "tree")]
    for cls, other in pairs:
        sketch = load_image(sorted((tu_berlin / cls).glob("*.png"))[0])
        different = load_image(sorted((tu_berlin / other).glob("*.png"))[0])
        images = np.stack([preprocess_sketch(img, 224) for img in (sketch, _shifted(sketch), different)])
        vectors = mobilenet.embed(images)
        near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
        assert near > far + 0.05, f"{cls}: shifted copy {near:.3f} vs {other} {far:.3f}"


def test_same_class_is_closer_than_other_classes_on_average(mobilenet: Backbone, tu_berlin: Path) -> None:
    classes = ["ant", "sun", "bicycle", "guitar"]
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((tu_berlin / cls).glob("*.png"))[:5]:
            images.append(preprocess_sketch(load_image(path), 224))
            labels.append(label)
    vectors = mobilenet.embed(np.stack(images))
    sims = vectors @ vectors.T
    same = np.equal.outer(labels, labels) & ~np.eye(len(labels), dtype=bool)
    other = ~np.equal.outer(labels, labels)
    assert sims[same].mean() > sims[other].mean() + 0.05


# ------------------------------------------------------------------------------------------- mobilenet_v1v2


@pytest.fixture(scope="module")
def pair() -> Backbone:
    return load_backbone("mobilenet_v1v2")


def _sketches(count: int = 6) -> np.ndarray:
    """Random line drawings (no data set needed), preprocessed as served sketches are."""
    from PIL import ImageDraw

    rng = np.random.default_rng(3)
    images = []
    for _ in range(count):
        image = Image.new("L", (256, 256), 255)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 9))):
            draw.line([tuple(rng.integers(10, 246, 2).tolist()) for _ in range(3)], fill=0, width=4)
        images.append(preprocess_sketch(image, 224, thin=True))
    return np.stack(images)


def test_the_pair_is_each_models_unit_vector_side_by_side(pair: Backbone, mobilenet: Backbone) -> None:
    images = _sketches()
    vectors = pair.embed(images)
    assert (pair.name, pair.input_size, pair.dim, vectors.shape) == ("mobilenet_v1v2", 224, 2304, (6, 2304))
    assert backbone_spec("mobilenet_v1v2").dim == pair.dim
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[:, :1024] * np.sqrt(2), mobilenet.embed(images), atol=1e-6)
    v2 = vectors[:, 1024:] * np.sqrt(2)
    np.testing.assert_allclose(np.linalg.norm(v2, axis=1), 1.0, atol=1e-5)
    # A cosine over the pair is the mean of the two models' cosines: neither model outweighs the other.
    v1 = mobilenet.embed(images)
    np.testing.assert_allclose(vectors @ vectors.T, (v1 @ v1.T + v2 @ v2.T) / 2, atol=1e-5)
    assert 6_000_000 < pair.param_count < 7_500_000


def test_the_mobilenet_v2_features_are_the_pool_of_its_last_feature_map() -> None:
    """Oracle: the tapped AvgPool tensor equals the spatial mean of the 7x7x1280 map it pools (read as well)."""
    path = backbones.SHIPPED_WEIGHTS_DIR / backbones.MOBILENET_V2_FILE
    pooled = TFLiteBackbone("p", path, weights="shipped", output_tensor=backbones.MOBILENET_V2_FEATURES)
    feature_map = TFLiteBackbone(
        "m",
        path,
        weights="shipped",
        output_tensor="MobilenetV2/Conv_1/Relu6;MobilenetV2/Conv_1/add_fold;"
        "MobilenetV2/Conv_1/Conv2D_Fold;MobilenetV2/Conv_1/BatchNorm_Fold/bias",
    )
    assert (pooled.dim, feature_map.dim) == (1280, 7 * 7 * 1280)
    images = _sketches(3)
    interpreter = feature_map._interpreter
    means = []
    for image in images:  # the raw (dequantised) map, before Backbone.embed's normalisation
        interpreter.set_tensor(feature_map._input_index, image[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(feature_map._output_index).astype(np.float32)
        means.append(raw.reshape(-1, 1280).mean(axis=0))
    expected = l2_normalize(np.array(means))
    got = pooled.embed(images)
    assert float(np.min(np.sum(got * expected, axis=1))) > 0.999  # uint8 rounding of the pool only


def test_a_tensor_the_model_does_not_have_is_named() -> None:
    path = backbones.SHIPPED_WEIGHTS_DIR / backbones.MOBILENET_V2_FILE
    with pytest.raises(ValueError, match="no tensor named 'Nope/AvgPool'"):
        TFLiteBackbone("x", path, weights="shipped", output_tensor="Nope/AvgPool")


def test_the_pair_names_a_missing_model_file(tmp_path: Path) -> None:
    (tmp_path / backbones.MOBILENET_V1_FILE).write_bytes(b"")
    with pytest.raises(WeightsUnavailableError, match=backbones.MOBILENET_V2_FILE):
        load_backbone("mobilenet_v1v2", weights=str(tmp_path))


def test_a_concatenation_needs_parts_of_one_input_size(mobilenet: Backbone) -> None:
    class Small:
        name, input_size, dim, param_count, weights = "small", 96, 8, 0, "none"

    with pytest.raises(ValueError, match="one input size"):
        ConcatBackbone("c", [mobilenet, Small()], weights="none")
    with pytest.raises(ValueError, match="at least one"):
        ConcatBackbone("c", [], weights="none")


# --------------------------------------------------------------------------------------------- inception_v3


def test_inception_imagenet_weights_raise_quickly_when_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    monkeypatch.setattr(backbones, "keras_cache_candidates", lambda name: [tmp_path / "models" / name])
    probed: list[str] = []

    def unreachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
        probed.append(host)
        return False

    monkeypatch.setattr(backbones, "_host_reachable", unreachable)
    # Quickly: one bounded reachability probe, and no attempt to build the model (nor to download its weights).
    monkeypatch.setitem(sys.modules, "keras", _Forbidden("keras"))
    with pytest.raises(WeightsUnavailableError, match="not cached at .*inception_v3_weights"):
        load_backbone("inception_v3")  # weights=None -> "imagenet"
    assert probed == ["storage.googleapis.com"]


class _Forbidden:
    """A module stand-in whose every attribute access fails the test."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> object:
        raise AssertionError(f"{self._name}.{attribute} was used")


def test_inception_imagenet_weights_raise_on_this_machine_when_not_cached() -> None:
    cached = any(p.is_file() for p in backbones.keras_cache_candidates(backbones.INCEPTION_V3_NOTOP_FILE))
    if cached or backbones._host_reachable("storage.googleapis.com", timeout=2.0):
        pytest.skip("InceptionV3 ImageNet weights are cached or downloadable here")
    with pytest.raises(WeightsUnavailableError, match="mobilenet_v1"):
        load_backbone("inception_v3", weights="imagenet")


def test_inception_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="nope.h5"):
        load_backbone("inception_v3", weights=str(tmp_path / "nope.h5"))


def test_unreachable_host_probe_returns_false_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backbones._host_reachable("host.invalid", timeout=1.0) is False
    # A resolver or a connect that hangs: the probe gives up after its timeout while the connect is still
    # hanging, instead of waiting for it.
    release, started = threading.Event(), threading.Event()

    def hanging_connect(address: tuple[str, int], timeout: float | None = None) -> object:
        started.set()
        release.wait()
        raise OSError("released")

    monkeypatch.setattr(backbones.socket, "create_connection", hanging_connect)
    try:
        assert backbones._host_reachable("slow.invalid", timeout=0.05) is False
        assert started.is_set()
        assert not release.is_set()  # returned while the connect was still in progress
    finally:
        release.set()


@pytest.mark.slow
def test_inception_random_init_embeds_one_image() -> None:
    backbone = load_backbone("inception_v3", weights="none")
    assert (backbone.input_size, backbone.dim, backbone.weights) == (299, 2048, "none")
    assert 21_000_000 < backbone.param_count < 22_500_000  # InceptionV3 without top: 21.8 M
    vectors = backbone.embed(np.full((1, 299, 299, 3), 200, dtype=np.uint8))
    assert vectors.shape == (1, 2048)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_darknet_tiny_embeds_512_d() -> None:
    if not (backbones.DARKNET_TINY_DIR / "model.json").is_file():
        pytest.skip(f"Darknet-Tiny model not found at {backbones.DARKNET_TINY_DIR}")
    backbone = load_backbone("darknet_tiny")
    vectors = backbone.embed(np.full((2, 224, 224, 3), 255, dtype=np.uint8))
    assert vectors.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
