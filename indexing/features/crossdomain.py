"""Cross-domain (sketch -> photo) helpers: a photo-to-edge-map transform and a joint sketch/photo embedding head.

Two ways to make a photo comparable with a sketch:

- :func:`photo_to_edges` turns a photo into a line drawing (dark, thin edges on white) with a small NumPy Canny
  (Gaussian blur, Sobel gradients, non-maximum suppression, hysteresis on adaptive thresholds), so the sketch
  preprocessing and the same frozen extractor can embed it.
- :func:`build_joint_head` + :func:`fit_joint_head` learn a small two-branch head over frozen backbone vectors
  (one branch for sketches, one for photos) trained with contrastive (InfoNCE) losses on sketch-photo pairs.
  :func:`save_joint_head` / :func:`load_joint_head` store both branches in one ``.keras`` file, and
  :class:`JointBackbone` serves them as an extractor: sketches (the queries and sketch collections) go through the
  sketch branch, photos through the photo branch, into one space.

The edge transform is pure PIL + NumPy. Keras is imported inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from indexing.features.backbones import Backbone, l2_normalize
from indexing.features.preprocess import scale_longer_side, to_display_mode

if TYPE_CHECKING:
    import keras

__all__ = [
    "DEFAULT_EDGE_SIDE",
    "JOINT_HEAD",
    "PHOTO_INPUTS",
    "JointBackbone",
    "JointFit",
    "build_joint_head",
    "fit_joint_head",
    "joint_embed",
    "load_joint_head",
    "photo_to_edges",
    "save_joint_head",
    "triplet_batches",
]

# Extractor.head of a served joint embedding, and what its photo branch was trained on (how photos are prepared).
JOINT_HEAD = "joint"
PHOTO_INPUTS = ("photo", "edges", "hed")

# The photos are scaled so that their longer side is this many pixels before edge detection: the edges' density
# then does not depend on the source resolution (Sketchy photos are 192 px here, canvas sketches 256-512 px).
DEFAULT_EDGE_SIDE = 192


def _sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    padded = np.pad(gray, 1, mode="edge")
    a = padded[:-2, :-2]
    b = padded[:-2, 1:-1]
    c = padded[:-2, 2:]
    d = padded[1:-1, :-2]
    f = padded[1:-1, 2:]
    g = padded[2:, :-2]
    h = padded[2:, 1:-1]
    i = padded[2:, 2:]
    gx = (c + 2 * f + i) - (a + 2 * d + g)
    gy = (g + 2 * h + i) - (a + 2 * b + c)
    return gx, gy


def _non_max_suppression(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    # Quantise the gradient direction into 4 bins (0, 45, 90, 135 degrees) and keep a pixel only when it is not
    # smaller than both neighbours along the gradient: edges become one pixel wide, like pen strokes.
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    padded = np.pad(magnitude, 1, mode="constant")
    h, w = magnitude.shape
    neighbours = {
        0: (padded[1 : h + 1, 0:w], padded[1 : h + 1, 2 : w + 2]),
        45: (padded[0:h, 2 : w + 2], padded[2 : h + 2, 0:w]),
        90: (padded[0:h, 1 : w + 1], padded[2 : h + 2, 1 : w + 1]),
        135: (padded[0:h, 0:w], padded[2 : h + 2, 2 : w + 2]),
    }
    bins = np.select(
        [(angle < 22.5) | (angle >= 157.5), angle < 67.5, angle < 112.5],
        [0, 45, 90],
        default=135,
    )
    keep = np.zeros_like(magnitude, dtype=bool)
    for direction, (n1, n2) in neighbours.items():
        sel = bins == direction
        keep |= sel & (magnitude >= n1) & (magnitude >= n2)
    return np.where(keep, magnitude, 0.0)


def _hysteresis(strong: np.ndarray, weak: np.ndarray, iterations: int = 16) -> np.ndarray:
    # Grow the strong edges into connected weak ones (a bounded number of 8-neighbour dilation steps).
    edges = strong.copy()
    for _ in range(iterations):
        padded = np.pad(edges, 1, mode="constant")
        grown = np.zeros_like(edges)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + edges.shape[0], dx : dx + edges.shape[1]]
        new = edges | (grown & weak)
        if np.array_equal(new, edges):
            break
        edges = new
    return edges


def photo_to_edges(
    img: Image.Image,
    *,
    side: int = DEFAULT_EDGE_SIDE,
    sigma: float = 2.0,
    high_quantile: float = 0.85,
    low_ratio: float = 0.4,
    floor: float = 0.15,
) -> Image.Image:
    """Turn a photo into a sketch-like edge map: thin dark edges on a white background.

    Canny-style: grayscale, scale the longer side to ``side``, Gaussian blur, Sobel gradients, non-maximum
    suppression (one-pixel edges), then hysteresis with thresholds adapted to the picture: the high threshold is
    the ``high_quantile`` of the non-zero suppressed magnitudes, the low one ``low_ratio`` times that.

    Args:
        img: The decoded photo, any PIL mode.
        side: Longer side, in pixels, the photo is scaled to before edge detection.
        sigma: Gaussian blur radius (larger = fewer, smoother edges).
        high_quantile: Quantile of the edge candidates' strength kept as strong edges (0 < q < 1).
        low_ratio: Low hysteresis threshold as a fraction of the high one (0 < r <= 1).
        floor: The high threshold is at least this fraction of the strongest edge, so texture and JPEG noise in a
            mostly flat photo do not become strokes.

    Returns:
        A mode ``"L"`` image of the scaled size: 0 on edges, 255 elsewhere (all white for a flat photo).

    Raises:
        ValueError: A parameter out of range.
    """
    if side < 8:
        raise ValueError(f"side must be >= 8, got {side}")
    if not 0.0 < high_quantile < 1.0:
        raise ValueError(f"high_quantile must be in (0, 1), got {high_quantile}")
    if not 0.0 < low_ratio <= 1.0:
        raise ValueError(f"low_ratio must be in (0, 1], got {low_ratio}")
    gray = scale_longer_side(to_display_mode(img).convert("L"), side)
    if sigma > 0:
        gray = gray.filter(ImageFilter.GaussianBlur(sigma))
    pixels = np.asarray(gray, dtype=np.float32)
    gx, gy = _sobel(pixels)
    magnitude = np.hypot(gx, gy)
    thin = _non_max_suppression(magnitude, gx, gy)
    candidates = thin[thin > 1e-3]
    out = np.full(pixels.shape, 255, dtype=np.uint8)
    if candidates.size == 0 or float(candidates.max()) < 4.0:  # flat picture (Sobel of a 1-level step is 4)
        return Image.fromarray(out, mode="L")
    high = max(float(np.quantile(candidates, high_quantile)), floor * float(candidates.max()))
    low = low_ratio * high
    edges = _hysteresis(thin >= high, thin >= low)
    out[edges] = 0
    return Image.fromarray(out, mode="L")


# ------------------------------------------------------------------------------------------- joint embedding


def build_joint_head(
    input_dim: int, *, hidden: int = 512, dim: int = 256, shared: bool = False, seed: int = 0
) -> tuple[keras.Model, keras.Model]:
    """Build the sketch and photo branches of a joint embedding over frozen backbone vectors.

    Each branch is Dense(hidden, ReLU) -> Dense(dim) -> L2 normalisation. With ``shared=True`` both branches are
    the same model (one set of weights).

    Args:
        input_dim: Length of the backbone vectors (1024 for ``mobilenet_v1``).
        hidden: Hidden layer width.
        dim: Output (embedding) length.
        shared: One branch for both domains.
        seed: Weight initialisation seed.

    Returns:
        ``(sketch_branch, photo_branch)`` Keras models ``(n, input_dim) -> (n, dim)``.
    """
    import keras

    def branch(name: str, offset: int) -> keras.Model:
        inputs = keras.Input(shape=(input_dim,), name=f"{name}_features")
        x = keras.layers.Dense(
            hidden, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed + offset)
        )(inputs)
        x = keras.layers.Dense(dim, kernel_initializer=keras.initializers.GlorotUniform(seed + offset + 1))(x)
        x = keras.layers.UnitNormalization(axis=-1)(x)
        return keras.Model(inputs, x, name=f"{name}_branch")

    sketch = branch("sketch", 0)
    photo = sketch if shared else branch("photo", 10)
    return sketch, photo


def triplet_batches(
    photo_labels: np.ndarray, sketch_photo: np.ndarray, batch_classes: int, per_class: int, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch of P x K batches: ``batch_classes`` classes, ``per_class`` sketches of each with their photos.

    Args:
        photo_labels: ``(num_photos,)`` class of each training photo.
        sketch_photo: ``(num_sketches,)`` index into the photos of the photo each sketch was drawn from.
        batch_classes: Classes per batch (P).
        per_class: Sketches per class per batch (K).
        seed: Shuffle seed.

    Returns:
        A list of ``(sketch_indices, photo_indices)`` pairs, aligned (photo ``j`` is the one of sketch ``j``).
    """
    rng = np.random.default_rng(seed)
    sketch_labels = photo_labels[sketch_photo]
    by_class = {int(c): rng.permutation(np.flatnonzero(sketch_labels == c)) for c in np.unique(sketch_labels)}
    # Enough batches for each class to be seen about once per epoch.
    chunks: list[tuple[int, np.ndarray]] = []
    for c, idx in by_class.items():
        for start in range(0, len(idx), per_class):
            part = idx[start : start + per_class]
            if len(part) == per_class or len(idx) < per_class:
                chunks.append((c, part))
    order = rng.permutation(len(chunks))
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    current: list[np.ndarray] = []
    seen: set[int] = set()
    for k in order:
        c, part = chunks[k]
        if c in seen:
            continue
        current.append(part)
        seen.add(c)
        if len(current) == batch_classes:
            sk = np.concatenate(current)
            batches.append((sk, sketch_photo[sk]))
            current, seen = [], set()
    if len(current) >= 2:
        sk = np.concatenate(current)
        batches.append((sk, sketch_photo[sk]))
    return batches


@dataclass
class JointFit:
    """What :func:`fit_joint_head` did.

    Attributes:
        losses: Mean training loss per epoch.
        epochs: Epochs run.
    """

    losses: list[float] = field(default_factory=list)
    epochs: int = 0


def _contrastive_loss(a: Any, p: Any, labels: Any, ph_idx: Any, *, temperature: float, instance_weight: float) -> Any:
    """The loss of :func:`fit_joint_head` on one batch: sketch embeddings ``a`` against photo embeddings ``p``."""
    import tensorflow as tf

    logits = tf.matmul(a, p, transpose_b=True) / temperature  # (n, n) sketch x photo cosine / T
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    # Category: soft targets spread evenly over the same-class photos of the batch (multi-positive InfoNCE).
    category_targets = same / tf.reduce_sum(same, axis=1, keepdims=True)
    category = tf.nn.softmax_cross_entropy_with_logits(category_targets, logits)
    category_t = tf.nn.softmax_cross_entropy_with_logits(tf.transpose(category_targets), tf.transpose(logits))
    # Instance: the sketch's own photo against every other photo of the batch (duplicates share the target).
    own = tf.cast(tf.equal(ph_idx[:, None], ph_idx[None, :]), tf.float32)
    instance = tf.nn.softmax_cross_entropy_with_logits(own / tf.reduce_sum(own, axis=1, keepdims=True), logits)
    category = (category + category_t) / 2.0
    return tf.reduce_mean(category) + instance_weight * tf.reduce_mean(instance)


def fit_joint_head(
    sketch_branch: keras.Model,
    photo_branch: keras.Model,
    sketch_features: np.ndarray,
    photo_features: np.ndarray,
    photo_labels: np.ndarray,
    sketch_photo: np.ndarray,
    *,
    epochs: int = 30,
    batch_classes: int = 16,
    per_class: int = 4,
    temperature: float = 0.1,
    instance_weight: float = 0.5,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> JointFit:
    """Train the two branches with contrastive (InfoNCE) losses on sketch-photo pairs.

    In a P x K batch of sketches and their photos, the cosine similarities divided by ``temperature`` are logits.
    The category loss is a multi-positive softmax cross-entropy, sketch -> photos and photo -> sketches, whose
    targets are spread evenly over the same-class items of the batch; the instance loss is the cross-entropy of
    each sketch against its own photo. Loss = category + ``instance_weight`` * instance. (A batch-hard triplet
    loss was tried first: on MobileNetV1 features it collapsed every vector to one point within a few epochs.)

    Args:
        sketch_branch: From :func:`build_joint_head`.
        photo_branch: From :func:`build_joint_head`.
        sketch_features: ``(num_sketches, input_dim)`` frozen backbone vectors of the training sketches.
        photo_features: ``(num_photos, input_dim)`` frozen backbone vectors of the training photos (or edge maps).
        photo_labels: ``(num_photos,)`` class ids.
        sketch_photo: ``(num_sketches,)`` index of each sketch's photo in ``photo_features``.
        epochs: Passes over the sketches.
        batch_classes: Classes per batch.
        per_class: Sketches per class per batch.
        temperature: Softmax temperature of the similarities.
        instance_weight: Weight of the instance (own photo) loss; 0 trains on categories only.
        learning_rate: Adam learning rate.
        seed: Batch sampling seed.

    Returns:
        The per-epoch losses.
    """
    import keras
    import tensorflow as tf

    sk_all = tf.constant(np.asarray(sketch_features, dtype=np.float32))
    ph_all = tf.constant(np.asarray(photo_features, dtype=np.float32))
    labels_all = tf.constant(np.asarray(photo_labels, dtype=np.int64))
    weights = list({id(w): w for w in sketch_branch.trainable_weights + photo_branch.trainable_weights}.values())
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(sk_idx: Any, ph_idx: Any) -> Any:
        labels = tf.gather(labels_all, ph_idx)
        with tf.GradientTape() as tape:
            a = sketch_branch(tf.gather(sk_all, sk_idx), training=True)
            p = photo_branch(tf.gather(ph_all, ph_idx), training=True)
            loss = _contrastive_loss(a, p, labels, ph_idx, temperature=temperature, instance_weight=instance_weight)
        grads = tape.gradient(loss, weights)
        optimizer.apply_gradients(zip(grads, weights, strict=True))
        return loss

    result = JointFit()
    labels_np = np.asarray(photo_labels)
    pairs = np.asarray(sketch_photo, dtype=np.int64)
    for epoch in range(epochs):
        batches = triplet_batches(labels_np, pairs, batch_classes, per_class, seed=seed + epoch)
        losses = [float(step(tf.constant(sk), tf.constant(ph))) for sk, ph in batches]
        result.losses.append(float(np.mean(losses)) if losses else 0.0)
        result.epochs = epoch + 1
    return result


def joint_embed(branch: keras.Model, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Embed frozen backbone vectors with one branch.

    Args:
        branch: A branch from :func:`build_joint_head`.
        features: ``(n, input_dim)``.
        batch_size: Rows per forward pass.

    Returns:
        ``float32`` ``(n, dim)`` unit vectors.
    """
    feats = np.asarray(features, dtype=np.float32)
    if len(feats) == 0:
        return np.zeros((0, int(branch.output_shape[-1])), dtype=np.float32)
    parts = [np.asarray(branch(feats[i : i + batch_size], training=False)) for i in range(0, len(feats), batch_size)]
    return np.concatenate(parts).astype(np.float32)


# ------------------------------------------------------------------------------------------- serving


def save_joint_head(path: str, sketch_branch: keras.Model, photo_branch: keras.Model) -> None:
    """Save both branches in one ``.keras`` file (a model with two inputs and two outputs).

    Args:
        path: Target file (``.keras``).
        sketch_branch: From :func:`build_joint_head`.
        photo_branch: From :func:`build_joint_head` (may be the sketch branch itself when shared).
    """
    import keras

    sketch_in = keras.Input(shape=tuple(sketch_branch.input_shape[1:]), name="sketch_features")
    photo_in = keras.Input(shape=tuple(photo_branch.input_shape[1:]), name="photo_features")
    model = keras.Model([sketch_in, photo_in], [sketch_branch(sketch_in), photo_branch(photo_in)], name="joint")
    model.save(path)


def load_joint_head(path: str) -> tuple[keras.Model, keras.Model]:
    """Load the branches saved by :func:`save_joint_head`.

    Args:
        path: The ``.keras`` file.

    Returns:
        ``(sketch_branch, photo_branch)`` (the same model twice for a shared head).

    Raises:
        ValueError: The file holds no joint head.
    """
    import keras

    loaded = keras.models.load_model(path, compile=False)
    try:
        sketch = loaded.get_layer("sketch_branch")
    except ValueError as exc:
        raise ValueError(f"{path} holds no joint sketch/photo head (no 'sketch_branch' layer)") from exc
    try:
        photo = loaded.get_layer("photo_branch")
    except ValueError:
        photo = sketch  # shared weights
    return sketch, photo


class JointBackbone:
    """A frozen base backbone followed by the joint head: a :class:`Backbone` whose ``embed`` is the sketch side.

    ``embed(images)`` = sketch branch (drawn queries, sketch collections); :meth:`for_kind` gives the photo side
    (``photo_branch(base(photo))``) for photo collections, so sketches and photos land in one space and one index.
    ``photo_input`` says how photos are prepared before the base: ``"photo"`` (centre crop), ``"edges"`` (edge
    map, see :func:`photo_to_edges`) or ``"hed"`` (HED's contours, ``hed.photo_to_hed_edges``), as during training.
    """

    def __init__(
        self,
        base: Backbone,
        sketch_branch: keras.Model,
        photo_branch: keras.Model,
        *,
        name: str,
        photo_input: str = "photo",
        weights: str = "trained",
    ) -> None:
        """Wrap a base and the two branches.

        Args:
            base: The frozen base the head was trained on; its ``dim`` must be the branches' input width.
            sketch_branch: Sketch side of the head.
            photo_branch: Photo side of the head.
            name: Name reported (the Extractor's name).
            photo_input: One of ``PHOTO_INPUTS``.
            weights: Origin recorded for the wrapper.

        Raises:
            ValueError: Widths do not match, or an unknown ``photo_input``.
        """
        import tensorflow as tf

        if photo_input not in PHOTO_INPUTS:
            raise ValueError(f"photo_input must be one of {PHOTO_INPUTS}, got {photo_input!r}")
        for branch in (sketch_branch, photo_branch):
            width = int(branch.input_shape[-1])
            if width != base.dim:
                raise ValueError(f"{branch.name} takes {width}-d vectors but base {base.name} gives {base.dim}-d")
        if int(sketch_branch.output_shape[-1]) != int(photo_branch.output_shape[-1]):
            raise ValueError("the sketch and photo branches give vectors of different lengths")
        self.base = base
        self.name = name
        self.weights = weights
        self.input_size = base.input_size
        self.photo_input = photo_input
        self.dim = int(sketch_branch.output_shape[-1])
        shared = sketch_branch is photo_branch
        self.param_count = (
            int(base.param_count) + int(sketch_branch.count_params()) + (0 if shared else photo_branch.count_params())
        )
        spec = [tf.TensorSpec([None, base.dim], tf.float32)]
        # One traced function per branch for every batch size (see KerasBackbone for why not predict()).
        self._branches = {
            "sketch": tf.function(lambda x: sketch_branch(x, training=False), input_signature=spec),
            "photo": tf.function(lambda x: photo_branch(x, training=False), input_signature=spec),
        }

    def __repr__(self) -> str:
        return f"JointBackbone(name={self.name!r}, base={self.base.name!r}, dim={self.dim}, photos={self.photo_input})"

    def embed_features(self, features: np.ndarray, side: str = "sketch") -> np.ndarray:
        """Map base vectors through one branch.

        Args:
            features: ``float32`` ``(n, base.dim)`` base vectors.
            side: ``"sketch"`` or ``"photo"``.

        Returns:
            ``float32`` ``(n, dim)`` L2-normalised rows.
        """
        forward = self._branches[side]
        features = np.asarray(features, dtype=np.float32)
        if len(features) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [np.asarray(forward(features[i : i + 1024])) for i in range(0, len(features), 1024)]
        return l2_normalize(np.concatenate(parts))

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed preprocessed sketches (the query side); see :meth:`Backbone.embed`."""
        return self.embed_features(self.base.embed(images), "sketch")

    def embed_photos(self, images: np.ndarray) -> np.ndarray:
        """Embed photos prepared as ``photo_input`` says; see :meth:`Backbone.embed`."""
        return self.embed_features(self.base.embed(images), "photo")

    def for_kind(self, kind: str) -> Backbone:
        """The backbone that embeds images of one kind: ``"sketch"`` -> self, a photo input -> the photo side."""
        if kind == "sketch":
            return self
        if kind in PHOTO_INPUTS:
            return _PhotoSide(self)
        raise ValueError(f"kind must be 'sketch' or one of {', '.join(PHOTO_INPUTS)}, got {kind!r}")


class _PhotoSide:
    """The photo branch of a :class:`JointBackbone` as a plain :class:`Backbone`."""

    def __init__(self, joint: JointBackbone) -> None:
        self.joint = joint
        self.name = f"{joint.name}:photo"
        self.input_size = joint.input_size
        self.dim = joint.dim
        self.param_count = joint.param_count
        self.weights = joint.weights

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.joint.embed_photos(images)
