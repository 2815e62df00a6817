"""Training the heads of :mod:`indexing.features.heads`, fine-tuning a Keras base, and scoring the result.

Pure Keras and NumPy (no Django). The paper's procedure (Section 4.1) is: add the head, freeze the base, train the
head, unfreeze some blocks, train jointly at a lower learning rate. On a CPU the frozen part of the network is a
fixed function of the image, so it runs once per image and training reads the cache:

- ``head-only``: the cache is the base's L2-normalised pooled vector (the stored Feature rows); only the head
  trains. The one strategy for ``mobilenet_v1`` (a quantised TFLite graph, not trainable).
- ``two-blocks``: the cache is the input of the last two blocks (the backbone's registered
  ``BackboneSpec.cut_layer``), kept as float16; phase 1 trains the head on the pooled vectors computed from it,
  phase 2 trains the two blocks and the head jointly.
- ``all``: phase 2 trains the whole base on the images themselves (only sensible on a small subset here).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.metrics import average_precision_from_ranking
from indexing.features.backbones import l2_normalize
from indexing.features.heads import SIAMESE_MODEL, build_classifier_head, build_siamese, retrieval_model, siamese_pairs

if TYPE_CHECKING:
    import keras

__all__ = [
    "STRATEGIES",
    "FitResult",
    "class_recall",
    "curve_png",
    "fine_tune",
    "fit_head",
    "frozen_and_tail",
    "head_embed",
    "nearest_neighbour_labels",
    "predict_in_batches",
    "scan_map",
    "stratified_split",
    "whole_trunk",
]

STRATEGIES = ("head-only", "two-blocks", "all")
HEAD_LEARNING_RATE = 1e-3
# Phase 2 moves pretrained convolution weights, so it runs 10x slower, as the paper's Keras recipe does.
FINE_TUNE_LEARNING_RATE = 1e-4


@dataclass
class FitResult:
    """What training produced.

    Attributes:
        head: The trained classifier head, or Model 3's core (the part used for retrieval and saved).
        history: Per-epoch metrics, ``{"loss": [...], "val_loss": [...], "accuracy": [...], ...}``, both phases
            concatenated.
        phase_epochs: Epochs run in each phase, e.g. ``[12]`` or ``[8, 3]``.
        seconds: Wall-clock training time.
    """

    head: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    phase_epochs: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def extend(self, history: Mapping[str, Sequence[float]]) -> None:
        """Append one phase's Keras history.

        Args:
            history: ``keras.callbacks.History.history``.
        """
        epochs = 0
        for key, values in history.items():
            self.history.setdefault(key, []).extend(float(v) for v in values)
            epochs = max(epochs, len(values))
        self.phase_epochs.append(epochs)


def stratified_split(labels: np.ndarray, fraction: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a share of every class, deterministically.

    Args:
        labels: ``(n,)`` class of each row.
        fraction: Share held out per class, in ``[0, 1)``; a class with at least two rows gives at least one
            when ``fraction > 0``, and always keeps one.
        seed: Random seed.

    Returns:
        ``(kept, held_out)`` sorted ``int64`` row indices.

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if fraction == 0 or len(rows) < 2:
            continue
        count = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        held.append(rng.choice(rows, size=count, replace=False))
    held_out = np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out).astype(np.int64)
    return kept, held_out


def _callbacks(patience: int, has_validation: bool) -> list[Any]:
    import keras

    if not has_validation:
        return []
    return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)]


def fit_head(
    model: int,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    num_classes: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = HEAD_LEARNING_RATE,
    patience: int = 3,
    pairs_per_row: int = 4,
    seed: int = 0,
    verbose: int = 0,
) -> FitResult:
    """Build and train a head on cached base vectors (phase 1 of every strategy, all of ``head-only``).

    Models 1, 2, 4, 5 minimise the cross-entropy of the class; Model 3 the binary cross-entropy of "same class"
    on balanced pairs (``pairs_per_row`` x rows pairs, fixed by ``seed``). Early stopping watches the validation
    loss and restores the best epoch's weights.

    Args:
        model: 1..5.
        features: ``float32`` ``(n, dim)`` L2-normalised base vectors.
        targets: ``int`` ``(n,)`` class indices in ``[0, num_classes)``.
        num_classes: C.
        validation: ``(features, targets)`` for early stopping, or ``None`` to train all ``epochs``.
        epochs: Most epochs.
        batch_size: Rows (or pairs) per step.
        learning_rate: Adam's learning rate.
        patience: Epochs without a better validation loss before stopping.
        pairs_per_row: Model 3 only: training pairs per training row.
        seed: Seeds weights, dropout, shuffling and pairs.
        verbose: Keras progress output (0 silent, 1 progress bar, 2 one line per epoch).

    Returns:
        The :class:`FitResult`.
    """
    import keras

    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    features = np.asarray(features, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    callbacks = _callbacks(patience, validation is not None and len(validation[1]) > 0)
    optimizer = keras.optimizers.Adam(learning_rate)
    fit_options = {"epochs": epochs, "batch_size": batch_size, "verbose": verbose}
    if model == SIAMESE_MODEL:
        result = _fit_siamese(features, targets, optimizer, validation, callbacks, pairs_per_row, seed, fit_options)
    else:
        head = build_classifier_head(model, features.shape[1], num_classes, seed=seed)
        head.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = head.fit(
            features,
            targets,
            validation_data=validation if callbacks else None,
            callbacks=callbacks,
            **fit_options,
        )
        result = FitResult(head=head)
        result.extend(history.history)
    result.seconds = time.perf_counter() - started
    return result


def _fit_siamese(
    features: np.ndarray,
    targets: np.ndarray,
    optimizer: Any,
    validation: tuple[np.ndarray, np.ndarray] | None,
    callbacks: list[Any],
    pairs_per_row: int,
    seed: int,
    fit_options: dict[str, Any],
) -> FitResult:
    """Model 3 of :func:`fit_head`: the siamese network on balanced same/different pairs; its core is the head."""
    siamese, core = build_siamese(features.shape[1], seed=seed)
    siamese.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
    left, right, same = siamese_pairs(targets, pairs_per_row * len(targets), seed=seed)
    val_data = None
    if callbacks and validation is not None:
        v_features, v_targets = validation
        try:
            vl, vr, vs = siamese_pairs(v_targets, max(2, pairs_per_row * len(v_targets)), seed=seed + 1)
            val_data = ((v_features[vl], v_features[vr]), vs)
        except ValueError:  # too few validation rows for a same-class pair: train without early stopping
            callbacks = []
    history = siamese.fit(
        (features[left], features[right]), same, validation_data=val_data, callbacks=callbacks, **fit_options
    )
    result = FitResult(head=core)
    result.extend(history.history)
    return result


def frozen_and_tail(base: keras.Model, cut_layer: str) -> tuple[keras.Model, keras.Model]:
    """Split a functional base at a layer: the frozen front and the trainable tail (sharing the base's layers).

    Args:
        base: A Keras model ``image -> pooled vector``.
        cut_layer: The layer whose output is the tail's input (the backbone's ``BackboneSpec.cut_layer``).

    Returns:
        ``(frozen, tail)``: ``image -> cut activation`` and ``cut activation -> pooled vector``. Training the tail
        updates ``base`` itself.

    Raises:
        ValueError: ``base`` has no such layer.
    """
    import keras

    cut = base.get_layer(cut_layer).output
    # Single tensors, not one-element lists: the tail's output feeds the head directly.
    return keras.Model(base.inputs[0], cut, name="frozen"), keras.Model(cut, base.outputs[0], name="tail")


def _trainable(model: keras.Model) -> None:
    """Unfreeze every layer but batch normalisation, whose statistics stay those of the pretrained base.

    In Keras 3 a non-trainable BatchNormalization layer also runs in inference mode, which is what fine-tuning a
    pretrained network on a small data set needs (the moving averages would drift on tiny batches).
    """
    import keras

    model.trainable = True
    pending = list(model.layers)
    while pending:  # nested models (the whole base inside the ``all`` trunk) hold their own layers
        layer = pending.pop()
        if isinstance(layer, keras.Model):
            pending.extend(layer.layers)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def whole_trunk(base: keras.Model, scale: float, offset: float) -> keras.Model:
    """The ``all`` strategy's trunk: images (float pixels 0..255) -> pixel scaling -> the whole base.

    Args:
        base: A Keras model ``scaled image -> pooled vector``.
        scale: See ``BackboneSpec.pixel_scaling``.
        offset: See ``BackboneSpec.pixel_scaling``.

    Returns:
        ``(None, s, s, 3) -> (None, dim)``; its base layers are ``base``'s own.
    """
    import keras

    images = keras.Input(base.input_shape[1:], name="pixels")
    return keras.Model(images, base(keras.layers.Rescaling(scale, offset, name="pixel_scaling")(images)), name="trunk")


def fine_tune(
    trunk: keras.Model,
    head: keras.Model,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = FINE_TUNE_LEARNING_RATE,
    patience: int = 2,
    seed: int = 0,
    verbose: int = 0,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Phase 2: train the unfrozen part of the base and a (phase-1 trained) classifier head jointly.

    Args:
        trunk: The unfrozen part, ``input -> pooled vector`` (the tail for ``two-blocks``, a pixel-scaling model
            around the whole base for ``all``); its layers are updated in place.
        head: A classifier head from :func:`fit_head`.
        inputs: The trunk's inputs (float16 cut activations, or images).
        targets: ``(n,)`` class indices.
        validation: ``(inputs, targets)`` for early stopping, or ``None``.
        epochs: Most epochs.
        batch_size: Rows per step.
        learning_rate: Adam's learning rate (lower than phase 1).
        patience: Epochs without a better validation loss before stopping.
        seed: Seeds shuffling and dropout.
        verbose: Keras progress output.

    Returns:
        ``(joint, history)``: the model ``input -> trunk -> L2 normalisation -> head`` and its Keras history.
    """
    import keras

    keras.utils.set_random_seed(seed)
    _trainable(trunk)
    head.trainable = True
    x_in = keras.Input(trunk.input_shape[1:], name="trunk_input")
    pooled = keras.layers.UnitNormalization(name="l2_normalize")(trunk(x_in))
    joint = keras.Model(x_in, head(pooled), name="joint")
    joint.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    callbacks = _callbacks(patience, validation is not None and len(validation[1]) > 0)
    val_data = _float_batches(*validation, batch_size, shuffle_seed=None) if callbacks and validation else None
    history = joint.fit(
        _float_batches(inputs, targets, batch_size, shuffle_seed=seed),
        validation_data=val_data,
        epochs=epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    return joint, {k: [float(v) for v in values] for k, values in history.history.items()}


def _float_batches(inputs: np.ndarray, targets: np.ndarray, batch_size: int, *, shuffle_seed: int | None) -> Any:
    """Batches cast to float32 one at a time: the float16 cache (or uint8 images) is never copied whole."""
    import keras

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self.order = np.arange(len(inputs))
            self.on_epoch_end()

        def __len__(self) -> int:
            return (len(inputs) + batch_size - 1) // batch_size

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = np.sort(self.order[index * batch_size : (index + 1) * batch_size])
            return inputs[rows].astype(np.float32), np.asarray(targets)[rows]

        def on_epoch_end(self) -> None:
            if shuffle_seed is not None:
                self.order = np.random.default_rng(shuffle_seed + self.epoch).permutation(len(inputs))
                self.epoch += 1

    return Batches()


def predict_in_batches(fn: Callable[[np.ndarray], Any], inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run a model (or any array function) over ``inputs`` in batches and stack the outputs.

    Args:
        fn: Called with ``inputs[i:i + batch_size]``; returns an array or tensor.
        inputs: ``(n, ...)``.
        batch_size: Rows per call.

    Returns:
        ``(n, ...)`` float32 outputs.
    """
    parts = [np.asarray(fn(inputs[i : i + batch_size]), dtype=np.float32) for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def head_embed(head: keras.Model, features: np.ndarray, layer: str | None = None) -> np.ndarray:
    """Retrieval vectors of base vectors through a head's retrieval layer.

    Args:
        head: Classifier head or Model 3's core.
        features: ``(n, dim)`` base vectors.
        layer: Retrieval layer (``None`` = last hidden).

    Returns:
        ``float32`` ``(n, width)`` L2-normalised rows.
    """
    model = retrieval_model(head, layer)
    return l2_normalize(predict_in_batches(lambda x: model(x, training=False), np.asarray(features, np.float32), 512))


def scan_map(
    query_vectors: np.ndarray, query_labels: np.ndarray, gallery_vectors: np.ndarray, gallery_labels: np.ndarray
) -> float:
    """Mean average precision of a sequential scan: each query ranks the whole gallery by cosine similarity.

    Args:
        query_vectors: ``(q, dim)`` L2-normalised.
        query_labels: ``(q,)``.
        gallery_vectors: ``(n, dim)`` L2-normalised.
        gallery_labels: ``(n,)``.

    Returns:
        The mean AP over the queries whose class is in the gallery (same class = relevant).

    Raises:
        ValueError: No query has a relevant gallery item.
    """
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    classes, counts = np.unique(gallery_labels, return_counts=True)
    per_class = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    num_relevant = np.array([per_class.get(label, 0) for label in query_labels.tolist()], dtype=np.int64)
    keep = num_relevant > 0
    if not keep.any():
        raise ValueError("no query has a relevant gallery item")
    ap_values: list[np.ndarray] = []
    queries = np.asarray(query_vectors, np.float32)[keep]
    labels, totals = query_labels[keep], num_relevant[keep]
    gallery = np.asarray(gallery_vectors, np.float32)
    for start in range(0, len(queries), 256):  # bounds the (block, n) score matrix
        scores = queries[start : start + 256] @ gallery.T
        order = np.argsort(-scores, axis=1, kind="stable")
        relevant = gallery_labels[order] == labels[start : start + 256, np.newaxis]
        ap_values.append(average_precision_from_ranking(relevant, totals[start : start + 256]))
    return float(np.concatenate(ap_values).mean())


def nearest_neighbour_labels(
    query_vectors: np.ndarray, gallery_vectors: np.ndarray, gallery_labels: np.ndarray
) -> np.ndarray:
    """Label of each query's most similar gallery item (1-NN by cosine), the classifier used for Model 3.

    Args:
        query_vectors: ``(q, dim)`` L2-normalised.
        gallery_vectors: ``(n, dim)`` L2-normalised.
        gallery_labels: ``(n,)``.

    Returns:
        ``(q,)`` predicted labels.
    """
    best = [
        np.argmax(query_vectors[i : i + 256] @ gallery_vectors.T, axis=1) for i in range(0, len(query_vectors), 256)
    ]
    return np.asarray(gallery_labels)[np.concatenate(best)] if best else np.asarray(gallery_labels)[:0]


def class_recall(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, dict[str, float]]:
    """Accuracy and per-class recall (share of each class's items predicted as that class).

    Args:
        predicted: ``(n,)`` predicted labels.
        actual: ``(n,)`` true labels.

    Returns:
        ``(accuracy, {label: recall})``, labels as strings, sorted.

    Raises:
        ValueError: Different lengths or no rows.
    """
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    if predicted.shape != actual.shape or len(actual) == 0:
        raise ValueError(f"need equal, non-empty label arrays, got {predicted.shape} and {actual.shape}")
    correct = predicted == actual
    recall = {str(label): float(correct[actual == label].mean()) for label in np.unique(actual)}
    return float(correct.mean()), recall


def curve_png(history: Mapping[str, Sequence[float]], *, title: str, phase_epochs: Sequence[int] = ()) -> bytes:
    """Plot the training curves (loss and accuracy, training and validation) as a PNG.

    Args:
        history: Per-epoch metrics as in :class:`FitResult`.
        title: Figure title.
        phase_epochs: Epochs per phase; a dashed line marks where phase 2 starts.

    Returns:
        PNG bytes.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot global state

    figure = Figure(figsize=(9, 3.6), dpi=100)
    for position, metric in enumerate(("loss", "accuracy"), start=1):
        axes = figure.add_subplot(1, 2, position)
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            values = history.get(key)
            if values:
                axes.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3, label=key)
        if len(phase_epochs) > 1:
            axes.axvline(phase_epochs[0] + 0.5, color="grey", linestyle=":", label="unfreeze")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
