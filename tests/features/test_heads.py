"""The paper's heads (Models 1-5), their training on cached features, and the retrieval wrapper (no Django)."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.features.heads import (
    HEAD_LAYOUTS,
    HeadBackbone,
    build_classifier_head,
    build_siamese,
    head_param_count,
    hidden_layer_names,
    retrieval_model,
    siamese_pairs,
)
from indexing.features.training import (
    class_recall,
    fit_head,
    head_embed,
    scan_map,
    stratified_split,
)

DIM, CLASSES, PER_CLASS = 16, 3, 10


def separable(seed: int = 0, per_class: int = PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """3 classes x per_class unit vectors of dim 16: noisy copies of 3 random class centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES, DIM)) * 3
    targets = np.repeat(np.arange(CLASSES), per_class)
    vectors = centres[targets] + rng.standard_normal((len(targets), DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), targets


@pytest.mark.parametrize("model", [1, 2, 4, 5])
def test_classifier_head_layers_and_param_count(model: int) -> None:
    head = build_classifier_head(model, DIM, CLASSES)
    dense = [layer for layer in head.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [*HEAD_LAYOUTS[model].units, CLASSES]
    assert [d.name for d in dense[:-1]] == hidden_layer_names(model)
    assert all(d.activation.__name__ == "relu" for d in dense[:-1])
    assert dense[-1].activation.__name__ == "softmax"
    dropouts = [layer for layer in head.layers if layer.__class__.__name__ == "Dropout"]
    assert [d.rate for d in dropouts] == ([0.5] * len(HEAD_LAYOUTS[model].units) if model != 1 else [])
    assert head.count_params() == head_param_count(model, DIM, CLASSES)


def test_param_count_formula_by_hand() -> None:
    assert head_param_count(1, 2048, 250) == 2049 * 1024 + 1025 * 250
    assert head_param_count(2, 2048, 250) == 2049 * 2048 + 2049 * 2048 + 2049 * 250
    assert head_param_count(3, 2048, 250) == 2049 * 2048 * 2 + 2049  # shared core counted once, then Dense 1
    with pytest.raises(ValueError, match="model must be one of"):
        head_param_count(6, 16, 3)


def test_siamese_shares_one_core_and_ends_in_one_sigmoid() -> None:
    siamese, core = build_siamese(DIM)
    assert core.output_shape == (None, 2048)
    assert siamese.output_shape == (None, 1)
    assert siamese.get_layer("same").activation.__name__ == "sigmoid"
    assert siamese.count_params() == head_param_count(3, DIM, CLASSES)


def test_siamese_pairs_are_balanced_deterministic_and_correct() -> None:
    labels = np.repeat(np.array(["a", "b", "c"]), 5)
    left, right, same = siamese_pairs(labels, 101, seed=3)
    assert int(same.sum()) == 51  # half rounded up are same-class pairs
    assert np.array_equal(same == 1, labels[left] == labels[right])
    assert not np.any(left == right)
    again = siamese_pairs(labels, 101, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip((left, right, same), again, strict=True))
    assert not np.array_equal(left, siamese_pairs(labels, 101, seed=4)[0])
    with pytest.raises(ValueError, match="two classes"):
        siamese_pairs(np.array(["a", "a"]), 4)


def test_stratified_split_holds_out_each_class_deterministically() -> None:
    labels = np.repeat(np.array(["a", "b", "c"]), 10)
    kept, held = stratified_split(labels, 0.2, seed=1)
    assert sorted(np.unique(labels[held], return_counts=True)[1].tolist()) == [2, 2, 2]
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(30))
    assert np.array_equal(held, stratified_split(labels, 0.2, seed=1)[1])


def test_training_on_separable_features_reaches_high_accuracy() -> None:
    vectors, targets = separable()
    val_vectors, val_targets = separable(seed=0, per_class=4)  # same centres: a held-out sample
    fit = fit_head(
        1,
        vectors,
        targets,
        num_classes=CLASSES,
        validation=(val_vectors, val_targets),
        epochs=30,
        batch_size=8,
        patience=10,
    )
    predicted = np.argmax(np.asarray(fit.head(val_vectors, training=False)), axis=1)
    accuracy, recall = class_recall(predicted, val_targets)
    assert accuracy >= 0.9
    assert set(recall) == {"0", "1", "2"}
    assert len(fit.history["loss"]) == fit.phase_epochs[0]
    embedded = head_embed(fit.head, vectors)
    assert embedded.shape == (len(vectors), 1024)
    assert scan_map(embedded, targets, embedded, targets) > 0.9


def test_siamese_training_gives_a_retrieval_embedding() -> None:
    vectors, targets = separable()
    fit = fit_head(3, vectors, targets, num_classes=CLASSES, epochs=5, batch_size=16)
    embedded = head_embed(fit.head, vectors)
    assert embedded.shape == (len(vectors), 2048)
    assert scan_map(embedded, targets, embedded, targets) > 0.8


def test_scan_map_by_hand() -> None:
    gallery = np.array([[1, 0], [0, 1], [0.8, 0.6]], dtype=np.float32)
    # The query is closest to row 0 (relevant), then row 2 (not), then row 1 (relevant): AP = (1 + 2/3) / 2.
    assert scan_map(np.array([[1.0, 0.0]]), np.array(["a"]), gallery, np.array(["a", "a", "b"])) == pytest.approx(
        (1 + 2 / 3) / 2
    )


class FakeBase:
    name, input_size, dim, param_count, weights = "fake", 4, DIM, 10, "none"

    def embed(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1)[:, :DIM].astype(np.float32) + 1
        return flat / np.linalg.norm(flat, axis=1, keepdims=True)


@pytest.mark.parametrize(("layer", "width"), [(None, 2048), ("hidden_1", 2048)])
def test_head_backbone_embeds_unit_vectors_of_the_hidden_width(layer: str | None, width: int) -> None:
    head = build_classifier_head(4, DIM, CLASSES)
    wrapper = HeadBackbone(FakeBase(), head, name="fake-model4", layer=layer)
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    vectors = wrapper.embed(images)
    assert vectors.shape == (5, width)
    assert wrapper.dim == width
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert wrapper.param_count == 10 + head.count_params()


def test_retrieval_model_rejects_an_unknown_layer() -> None:
    with pytest.raises(ValueError, match="no layer 'nope'"):
        retrieval_model(build_classifier_head(1, DIM, CLASSES), "nope")


@pytest.mark.slow
def test_two_blocks_fine_tuning_trains_only_the_last_blocks_of_inception_v3() -> None:
    """The two-blocks code path on InceptionV3 (random weights, 75 px inputs, six images): cache, phase 1, phase 2."""
    from indexing.features.backbones import backbone_spec, load_backbone
    from indexing.features.training import fine_tune, frozen_and_tail

    model = load_backbone("inception_v3", weights="none", input_size=75).model  # type: ignore[attr-defined]
    frozen, tail = frozen_and_tail(model, backbone_spec("inception_v3").cut_layer or "")
    images = np.random.default_rng(0).uniform(-1, 1, (6, 75, 75, 3)).astype(np.float32)
    cache = np.asarray(frozen(images, training=False)).astype(np.float16)  # the input of mixed9 + mixed10
    targets = np.array([0, 1, 2, 0, 1, 2])
    pooled = np.asarray(tail(cache.astype(np.float32), training=False))
    fit = fit_head(1, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), targets, num_classes=3, epochs=1)
    tail_conv = next(lyr for lyr in tail.layers if lyr.__class__.__name__ == "Conv2D")
    # The stem, before the cut (by type: Keras numbers layer names per process, "conv2d" or "conv2d_94").
    front_conv = next(lyr for lyr in model.layers if lyr.__class__.__name__ == "Conv2D")
    tail_before, front_before = tail_conv.get_weights()[0].copy(), front_conv.get_weights()[0].copy()

    joint, history = fine_tune(tail, fit.head, cache, targets, epochs=1, batch_size=3)

    assert len(history["loss"]) == 1
    assert joint.output_shape == (None, 3)
    assert model.get_layer(tail_conv.name) is tail_conv  # the tail's layers are the base's own
    assert not np.allclose(tail_conv.get_weights()[0], tail_before)
    assert np.array_equal(front_conv.get_weights()[0], front_before)
