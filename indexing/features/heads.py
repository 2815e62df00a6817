"""The paper's fully connected heads (Models 1-5) on a globally pooled convolutional base, and their retrieval use.

A head takes the base's L2-normalised pooled vector (exactly what :meth:`Backbone.embed` returns and what the
Feature rows store), so a head can be trained on stored features and later run behind any backbone:

- Model 1: Dense 1024 -> Dense C (softmax)
- Model 2: [Dropout 0.5, Dense 2048] x 2 -> Dense C
- Model 3: siamese, Model 2's hidden layers as the shared core, ``|e1 - e2|`` -> Dense 1 (sigmoid)
- Model 4: [Dropout 0.5, Dense 2048] x 3 -> Dense C
- Model 5: [Dropout 0.5, Dense 4096] x 2 -> Dense C

Hidden layers use ReLU. The input is first multiplied by ``sqrt(dim)`` (a weightless ``Rescaling``): unit vectors
of 1,024 values are ~0.03 each, and without it the Glorot-initialised layers start with near-zero activations.
The retrieval embedding is a hidden layer's activation (the last one by default), L2-normalised
(:class:`HeadBackbone`). Keras is imported inside functions only, as in :mod:`indexing.features.backbones`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexing.features.backbones import Backbone, l2_normalize

if TYPE_CHECKING:
    import keras

__all__ = [
    "HEAD_LAYOUTS",
    "MODEL_NUMBERS",
    "HeadBackbone",
    "build_classifier_head",
    "build_head",
    "build_siamese",
    "head_name",
    "head_param_count",
    "hidden_layer_names",
    "load_head",
    "retrieval_model",
    "siamese_pairs",
]

MODEL_NUMBERS = (1, 2, 3, 4, 5)
SIAMESE_MODEL = 3


@dataclass(frozen=True)
class HeadLayout:
    """The hidden part of a head.

    Attributes:
        units: Width of each hidden Dense layer, in order.
        dropout: Dropout rate applied before each hidden Dense layer (0 for none).
    """

    units: tuple[int, ...]
    dropout: float


# Model 3's core is Model 2's hidden part (the paper builds the siamese network on Model 2).
HEAD_LAYOUTS: dict[int, HeadLayout] = {
    1: HeadLayout((1024,), 0.0),
    2: HeadLayout((2048, 2048), 0.5),
    3: HeadLayout((2048, 2048), 0.5),
    4: HeadLayout((2048, 2048, 2048), 0.5),
    5: HeadLayout((4096, 4096), 0.5),
}


def _layout(model: int) -> HeadLayout:
    if model not in HEAD_LAYOUTS:
        raise ValueError(f"model must be one of {MODEL_NUMBERS}, got {model!r}")
    return HEAD_LAYOUTS[model]


def head_name(model: int) -> str:
    """The ``Extractor.head`` value of a model number.

    Args:
        model: 1..5.

    Returns:
        ``"model<N>"``.

    Raises:
        ValueError: Unknown model number.
    """
    _layout(model)
    return f"model{model}"


def hidden_layer_names(model: int) -> list[str]:
    """Names of the hidden Dense layers of a head, first to last (any of them can be the retrieval layer).

    Args:
        model: 1..5.

    Returns:
        ``["hidden_1", ...]``.
    """
    return [f"hidden_{i + 1}" for i in range(len(_layout(model).units))]


def head_param_count(model: int, input_dim: int, num_classes: int) -> int:
    """Trainable parameters of a head, by formula: each Dense layer has ``(inputs + 1) * units`` weights.

    For Models 1, 2, 4, 5 the last layer is the ``num_classes`` softmax; for Model 3 it is the siamese Dense 1 on
    the ``|e1 - e2|`` vector (the two branches share one core, so it is counted once).

    Args:
        model: 1..5.
        input_dim: Width of the base's pooled vector.
        num_classes: C, classes of the training collection (ignored by Model 3).

    Returns:
        The parameter count (the base's parameters are not included).

    Raises:
        ValueError: Unknown model or a non-positive size.
    """
    layout = _layout(model)
    if input_dim < 1 or num_classes < 1:
        raise ValueError(f"input_dim and num_classes must be >= 1, got {input_dim} and {num_classes}")
    total, width = 0, input_dim
    for units in layout.units:
        total += (width + 1) * units
        width = units
    outputs = 1 if model == SIAMESE_MODEL else num_classes
    return total + (width + 1) * outputs


def _hidden_stack(model: int, input_dim: int, seed: int) -> tuple[Any, Any]:
    """The input and last hidden tensor of a head (the shared core of Model 3)."""
    import keras

    layout = _layout(model)
    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Rescaling(math.sqrt(input_dim), name="input_scale")(inputs)
    for i, units in enumerate(layout.units, start=1):
        if layout.dropout:
            x = keras.layers.Dropout(layout.dropout, seed=seed + i, name=f"dropout_{i}")(x)
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 100 + i),
            name=f"hidden_{i}",
        )(x)
    return inputs, x


def build_classifier_head(model: int, input_dim: int, num_classes: int, *, seed: int = 0) -> keras.Model:
    """Build the classifier head of Model 1, 2, 4 or 5.

    Args:
        model: 1, 2, 4 or 5.
        input_dim: Width of the base's pooled (L2-normalised) vector.
        num_classes: C.
        seed: Seeds the initialisers and dropout masks.

    Returns:
        A Keras model ``(None, input_dim) -> (None, num_classes)`` softmax, named ``model<N>``.

    Raises:
        ValueError: Model 3 (use :func:`build_siamese`) or an unknown model.
    """
    import keras

    if model == SIAMESE_MODEL:
        raise ValueError("model 3 is the siamese network: use build_siamese")
    inputs, hidden = _hidden_stack(model, input_dim, seed)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99),
        name="classes",
    )(hidden)
    return keras.Model(inputs, outputs, name=head_name(model))


def build_siamese(input_dim: int, *, seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """Build Model 3: two inputs through one shared core, ``|e1 - e2|``, then Dense 1 (sigmoid, "same class").

    Args:
        input_dim: Width of the base's pooled (L2-normalised) vector.
        seed: Seeds the initialisers and dropout masks.

    Returns:
        ``(siamese, core)``: the pair model ``[(None, input_dim), (None, input_dim)] -> (None, 1)``, and the
        shared core ``(None, input_dim) -> (None, 2048)`` (named ``model3``), which is what retrieval uses and
        what gets saved (the Lambda lives only in the pair model, so the saved file needs no unsafe loading).
    """
    import keras

    inputs, hidden = _hidden_stack(SIAMESE_MODEL, input_dim, seed)
    core = keras.Model(inputs, hidden, name=head_name(SIAMESE_MODEL))
    left = keras.Input((input_dim,), name="left")
    right = keras.Input((input_dim,), name="right")
    distance = keras.layers.Lambda(lambda t: keras.ops.abs(t[0] - t[1]), name="abs_difference")(
        [core(left), core(right)]
    )
    same = keras.layers.Dense(
        1, activation="sigmoid", kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 99), name="same"
    )(distance)
    return keras.Model([left, right], same, name="model3_siamese"), core


def build_head(model: int, input_dim: int, num_classes: int, *, seed: int = 0) -> keras.Model:
    """Build the trainable head of any model: the classifier (1, 2, 4, 5) or the siamese pair model (3).

    Args:
        model: 1..5.
        input_dim: Width of the base's pooled vector.
        num_classes: C (ignored by Model 3).
        seed: Seeds the initialisers and dropout masks.

    Returns:
        The Keras model that is trained.
    """
    if model == SIAMESE_MODEL:
        return build_siamese(input_dim, seed=seed)[0]
    return build_classifier_head(model, input_dim, num_classes, seed=seed)


def _is_classifier(head: keras.Model) -> bool:
    """Whether ``head`` outputs class probabilities: a softmax last layer, or the mean of softmax layers."""
    import keras

    def softmax(layer: Any) -> bool:
        return getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"

    last = head.layers[-1]
    if isinstance(last, keras.layers.Average):  # an ensemble (indexing.features.sketch_head.ensemble_head)
        members = [layer for layer in head.layers if layer.name.endswith(f"_{last.name}")]
        return bool(members) and all(softmax(layer) for layer in members)
    return softmax(last)


def retrieval_model(head: keras.Model, layer: str | None = None) -> keras.Model:
    """The part of a head that produces the retrieval embedding.

    Args:
        head: A classifier head, or Model 3's core.
        layer: Name of the layer whose activation is the embedding; ``None`` for the last ``hidden_*`` layer.

    Returns:
        A model ``(None, input_dim) -> (None, width of that layer)``.

    Raises:
        ValueError: The head has no such layer.
    """
    import keras

    names = [lyr.name for lyr in head.layers]
    if layer is None:
        hidden = [n for n in names if n.startswith("hidden_")]
        if not hidden:
            raise ValueError(f"head {head.name} has no hidden_* layer; layers: {', '.join(names)}")
        layer = hidden[-1]
    if layer not in names:
        raise ValueError(f"head {head.name} has no layer {layer!r}; layers: {', '.join(names)}")
    # A single input tensor, not a one-element list, so calls with a plain array match the model's structure.
    inputs = head.inputs[0] if len(head.inputs) == 1 else head.inputs
    return keras.Model(inputs, head.get_layer(layer).output, name=f"{head.name}_{layer}")


def siamese_pairs(labels: np.ndarray, num_pairs: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw balanced same-class / different-class pairs of rows, deterministically.

    Args:
        labels: ``(n,)`` class of each row (any comparable dtype); at least two classes, one with two rows.
        num_pairs: Pairs to draw; the first ``num_pairs // 2`` (rounded up) are same-class pairs, the rest
            different-class pairs, then the order is shuffled.
        seed: Random seed; the same seed and labels give the same pairs.

    Returns:
        ``(left, right, same)``: ``int64`` ``(num_pairs,)`` row indices and ``float32`` ``(num_pairs,)``
        targets (1 = same class). A row is never paired with itself.

    Raises:
        ValueError: Fewer than two classes, no class with two rows, or ``num_pairs`` < 2.
    """
    labels = np.asarray(labels)
    if num_pairs < 2:
        raise ValueError(f"num_pairs must be >= 2, got {num_pairs}")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.max() < 2:
        raise ValueError("siamese pairs need at least two classes and a class with two rows")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    pairable = np.flatnonzero(counts >= 2)
    num_same = (num_pairs + 1) // 2
    num_diff = num_pairs - num_same

    same_classes = rng.choice(pairable, size=num_same)
    same_left = np.empty(num_same, dtype=np.int64)
    same_right = np.empty(num_same, dtype=np.int64)
    for i, c in enumerate(same_classes):
        same_left[i], same_right[i] = rng.choice(members[c], size=2, replace=False)

    diff_left = rng.integers(0, len(labels), size=num_diff)
    # Shift the partner's class by 1..C-1 so it always differs, then draw a member of that class.
    partner_class = (inverse[diff_left] + rng.integers(1, len(classes), size=num_diff)) % len(classes)
    diff_right = np.array([rng.choice(members[c]) for c in partner_class], dtype=np.int64)

    left = np.concatenate([same_left, diff_left.astype(np.int64)])
    right = np.concatenate([same_right, diff_right])
    same = np.concatenate([np.ones(num_same, np.float32), np.zeros(num_diff, np.float32)])
    order = rng.permutation(num_pairs)
    return left[order], right[order], same[order]


def load_head(path: str | Path) -> tuple[keras.Model, keras.Model | None]:
    """Load a saved head file.

    A head-only model is saved as the head itself; a fine-tuned one as a bundle ``image -> base -> head`` whose
    nested ``head`` layer is the head (the bundle carries the fine-tuned base weights).

    Args:
        path: The ``.keras`` file.

    Returns:
        ``(head, bundle)``; ``bundle`` is ``None`` for a head-only file.
    """
    import keras

    loaded = keras.models.load_model(path, compile=False)
    try:
        nested = loaded.get_layer("head")
    except ValueError:
        return loaded, None
    return nested, loaded


class HeadBackbone:
    """A base backbone followed by a trained head's retrieval layer, L2-normalised: a :class:`Backbone`.

    ``embed(images) = l2_normalize(retrieval(base.embed(images)))``, so the vectors can go into the same Feature
    rows, LSH index and search as any other backbone's.
    """

    def __init__(
        self, base: Backbone, head: keras.Model, *, name: str, layer: str | None = None, weights: str = "trained"
    ) -> None:
        """Wrap a base and a head.

        Args:
            base: The (possibly fine-tuned) base backbone; its ``dim`` must be the head's input width.
            head: A classifier head or Model 3's core.
            name: Name reported by the wrapper (the Extractor's name).
            layer: Retrieval layer, ``None`` for the last hidden layer.
            weights: Origin recorded for the wrapper.

        Raises:
            ValueError: The head's input width is not the base's ``dim``.
        """
        import tensorflow as tf

        width = int(head.input_shape[-1])
        if width != base.dim:
            raise ValueError(f"head {head.name} takes {width}-d vectors but base {base.name} gives {base.dim}-d")
        self.base = base
        self.name = name
        self.weights = weights
        self.input_size = base.input_size
        self._model = retrieval_model(head, layer)
        self.dim = int(self._model.output_shape[-1])
        self.param_count = int(base.param_count) + int(head.count_params())
        model = self._model
        # One traced function for every batch size (see KerasBackbone for why not predict()).
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, width], tf.float32)],
            reduce_retracing=True,
        )
        # A softmax classifier head also predicts the query's classes (the drawing page's suggestion chips);
        # Model 3's siamese core has no class output.
        self.num_classes = int(head.output_shape[-1]) if _is_classifier(head) else 0
        self._classify = (
            tf.function(
                lambda x: head(x, training=False),
                input_signature=[tf.TensorSpec([None, width], tf.float32)],
                reduce_retracing=True,
            )
            if self.num_classes
            else None
        )

    def __repr__(self) -> str:
        return f"HeadBackbone(name={self.name!r}, base={self.base.name!r}, dim={self.dim})"

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Map base vectors (e.g. stored Feature rows) to retrieval vectors without re-running the base.

        Args:
            features: ``float32`` ``(n, base.dim)`` L2-normalised base vectors.

        Returns:
            ``float32`` ``(n, dim)`` L2-normalised rows.
        """
        features = np.asarray(features, dtype=np.float32)
        if len(features) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._forward(features[i : i + 1024]).numpy() for i in range(0, len(features), 1024)]
        return l2_normalize(np.concatenate(parts))

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed preprocessed images; see :meth:`Backbone.embed`.

        Args:
            images: ``uint8`` ``(n, input_size, input_size, 3)``.

        Returns:
            ``float32`` ``(n, dim)`` L2-normalised rows.
        """
        return self.embed_features(self.base.embed(images))

    def embed_and_classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Embed images and, for a classifier head, predict their class probabilities from the same base pass.

        Args:
            images: ``uint8`` ``(n, input_size, input_size, 3)``.

        Returns:
            ``(vectors, probabilities, features)``: as :meth:`embed`; ``float32`` ``(n, num_classes)`` softmax rows
            in the order of the training classes, or ``None`` when the head has no class output; and the base's
            own vectors (what a base Feature row of these images holds).
        """
        features = np.asarray(self.base.embed(images), dtype=np.float32)
        probabilities = self._classify(features).numpy() if self._classify is not None else None
        return self.embed_features(features), probabilities, features
