"""The served sketch head: a classifier over the frozen backbone, trained on TU-Berlin and Quick, Draw! drawings.

Retrieval uses the head's class probabilities, L2-normalised (the ``classes`` layer as retrieval layer of
:class:`~indexing.features.heads.HeadBackbone`): a drawing and the gallery sketches of its class land near the
same corner of the simplex, whatever style each was drawn in. Measured against the last hidden layer on the
Quick, Draw! validation protocol (docs/relevance.md), that is what turns a head that recognises the class into
results of that class.

Training data, embedded once with the frozen backbone (:func:`embed_views`, cached by the caller):

- TU-Berlin sketches (a ``png/<class>/<id>.png`` folder), plain and as :func:`~indexing.features.augment.raster_view`
  views;
- Quick, Draw! drawings (a folder of ``<word>.ndjson``) of the gallery's classes (:data:`WORD_ALIASES` maps the
  data set's spelling onto TU-Berlin's), drawn as the page draws them, whole and cut after 25/50/75% of their
  strokes.

The weights ship as int8 (a scale per output unit) in an ``.npz`` (:func:`save_head`, :func:`load_head_file`): a
few MB, rebuilt into the Keras head at load time. Keras is imported inside functions only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexing.features.augment import AugmentSpec, drawing_view, page_render, raster_view
from indexing.features.backbones import Backbone
from indexing.features.preprocess import load_image, preprocess_sketch
from indexing.features.quickdraw import Drawing, cut_strokes, read_folder

if TYPE_CHECKING:
    import keras

__all__ = [
    "CUTS",
    "FOLDS",
    "RETRIEVAL_LAYER",
    "SHIPPED_HEAD",
    "WORD_ALIASES",
    "HeadRecipe",
    "TrainingSet",
    "ViewCache",
    "build_sketch_head",
    "embed_views",
    "ensemble_head",
    "ensemble_members",
    "fit_sketch_head",
    "load_head_file",
    "quantize_int8",
    "quickdraw_folds",
    "save_head",
    "tu_berlin_files",
]

SHIPPED_HEAD = Path(__file__).resolve().parent / "weights" / "sketch_head.npz"
RETRIEVAL_LAYER = "classes"  # the softmax: retrieval by class probabilities
# Quick, Draw! words that name a TU-Berlin class with another spelling; the other shared classes have one name.
WORD_ALIASES = {"wine bottle": "wine-bottle", "light bulb": "lightbulb"}
CUTS = (0.25, 0.5, 0.75)  # the unfinished drawings live search sends
FOLDS = 5  # of the 15 drawings per word: 3 per fold, by file position
# The head's extra class for photographs (trained on photos that are never the distractor photos measured): a
# photo's probabilities gather there, away from every sketch class, so photos stop crowding a sketch's results.
# Not a class anyone draws: the page's suggestion chips skip it.
PHOTO_CLASS = "(photo)"


@dataclass(frozen=True)
class HeadRecipe:
    """How the served head is trained (chosen on the Quick, Draw! validation folds; docs/relevance.md).

    Attributes:
        hidden: Widths of the hidden ReLU layers.
        dropout: Dropout before each Dense layer.
        epochs: Training epochs (no early stopping: every run trains the same length, so folds compare).
        batch_size: Rows per step.
        learning_rate: Adam's.
        seed: Seeds weights, dropout and shuffling.
        raster_views: Augmented views per TU-Berlin sketch beyond the plain one.
        drawing_views: Augmented views per Quick, Draw! drawing beyond the plain one and its cuts.
        cuts: Which unfinished versions (fractions of the strokes) of each Quick, Draw! drawing it trains on.
        cut_weight: Loss weight of an unfinished drawing relative to a whole one.
        photo_weight: Loss weight of a photo of the :data:`PHOTO_CLASS` (0: no photo class). Served with 1: photos
            of a collection then stop crowding a drawing's results (photos in the top 10 of the within-set protocol
            5.9% -> 0.0%, Quick, Draw! level; README "Relevance").
        members: Heads trained independently (seeds ``seed``, ``seed + 1``, ...) whose class probabilities are
            averaged (an ensemble; 1: a single head).
        thin_strokes: Every sketch (training views, gallery, queries) is thinned to one-pixel strokes before the
            backbone (``preprocess_sketch(thin=True)``), so pen width, resolution and grey level stop mattering;
            the head then needs the base vectors of a ``sketch_thin`` extractor.
        backbone: The registered frozen backbone whose vectors the head maps. Served: ``mobilenet_v1v2``
            (MobileNetV1 and MobileNetV2 features side by side), which found the class of held-out Quick, Draw!
            drawings more often than ``mobilenet_v1`` alone (docs/relevance.md).
    """

    hidden: tuple[int, ...] = (1024,)
    dropout: float = 0.5
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 1e-3
    seed: int = 0
    raster_views: int = 0
    drawing_views: int = 0
    cuts: tuple[float, ...] = CUTS
    cut_weight: float = 0.5
    photo_weight: float = 1.0
    members: int = 3
    thin_strokes: bool = True
    backbone: str = "mobilenet_v1v2"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (stored in a head file's metadata and with an evaluation run)."""
        return asdict(self) | {"hidden": list(self.hidden), "cuts": list(self.cuts)}


@dataclass
class ViewCache:
    """Backbone vectors of every training view, keyed by view name (``"plain"``, ``"cut50"``, ``"aug0"``, ...).

    Attributes:
        labels: ``(n,)`` class of each source item (TU-Berlin class names; Quick, Draw! words mapped by aliases).
        source: ``(n,)`` ``"tu"`` or ``"qd"``.
        keys: ``(n,)`` the item's id in its data set (TU-Berlin file id, Quick, Draw! key_id).
        fold: ``(n,)`` Quick, Draw! validation fold (-1 for TU-Berlin items).
        views: view name -> ``(n, dim)`` float32 (rows of items a view does not apply to are zero).
    """

    labels: np.ndarray
    source: np.ndarray
    keys: np.ndarray
    fold: np.ndarray
    views: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the cache as one ``.npz``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"view_{name}": vectors for name, vectors in self.views.items()}
        arrays.update(labels=self.labels, source=self.source, keys=self.keys, fold=self.fold)
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly

    @classmethod
    def load(cls, path: Path) -> ViewCache:
        """Read a cache written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            views = {name[5:]: data[name] for name in data.files if name.startswith("view_")}
            return cls(data["labels"], data["source"], data["keys"], data["fold"], views)


def tu_berlin_files(folder: Path) -> list[tuple[Path, str]]:
    """(file, class) of a TU-Berlin-layout folder (``png/<class>/<id>.png`` or ``<class>/<id>.png``), by class and id.

    Raises:
        FileNotFoundError: No such folder, or no PNG in it.
    """
    root = folder / "png" if (folder / "png").is_dir() else folder
    files = sorted(root.glob("*/*.png"), key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else 0, p.stem))
    if not files:
        raise FileNotFoundError(f"no TU-Berlin sketches (<class>/<id>.png) under {folder}")
    return [(path, path.parent.name) for path in files]


def quickdraw_folds(drawings: Sequence[Drawing]) -> np.ndarray:
    """Validation fold of each drawing: its position among its word's drawings (file order) // 3, so 5 folds of 15.

    Returns:
        ``(n,)`` int fold numbers.
    """
    seen: dict[str, int] = {}
    folds = np.empty(len(drawings), dtype=np.int64)
    for i, drawing in enumerate(drawings):
        position = seen.get(drawing.word, 0)
        seen[drawing.word] = position + 1
        folds[i] = min(position * FOLDS // 15, FOLDS - 1)
    return folds


def embed_views(
    backbone: Backbone,
    *,
    tu_berlin: Path,
    quickdraw: Path,
    recipe: HeadRecipe = HeadRecipe(),
    spec: AugmentSpec | None = None,
    progress: Any = None,
) -> ViewCache:
    """Embed every training view once with the frozen backbone.

    Quick, Draw! words are kept when they name a TU-Berlin class (directly or through :data:`WORD_ALIASES`).

    Args:
        backbone: The frozen base (e.g. the shipped MobileNetV1).
        tu_berlin: TU-Berlin-layout folder.
        quickdraw: Folder of ``<word>.ndjson``.
        recipe: How many augmented views to make, and whether strokes are thinned.
        spec: What an augmented view may change.
        progress: Optional ``callable(done, total)``.

    Returns:
        The :class:`ViewCache`.
    """
    files = tu_berlin_files(tu_berlin)
    classes = {label for _, label in files}
    drawings = [d for d in read_folder(quickdraw) if WORD_ALIASES.get(d.word, d.word) in classes]
    size = backbone.input_size
    spec = spec or AugmentSpec()
    rng = np.random.default_rng(recipe.seed)
    n_tu, n_qd = len(files), len(drawings)
    views: dict[str, np.ndarray] = {}
    jobs: list[tuple[str, slice, Iterable[Any]]] = [
        ("plain", slice(0, n_tu), (load_image(path) for path, _ in files)),
        ("plain", slice(n_tu, None), (page_render(d.strokes) for d in drawings)),
    ]
    for cut in CUTS:
        name = f"cut{round(cut * 100)}"
        # A function call binds this fraction now (a generator here would read the loop's last one later).
        jobs.append((name, slice(n_tu, None), _cut_views(drawings, cut)))
    for v in range(recipe.raster_views):
        jobs.append((f"raster{v}", slice(0, n_tu), (raster_view(load_image(p), rng, spec) for p, _ in files)))
    for v in range(recipe.drawing_views):
        jobs.append((f"drawing{v}", slice(n_tu, None), (drawing_view(d.strokes, rng, spec) for d in drawings)))
    total = sum(len(range(n_tu + n_qd)[part]) for _, part, _ in jobs)
    done = 0
    for name, part, images in jobs:
        target = views.setdefault(name, np.zeros((n_tu + n_qd, backbone.dim), dtype=np.float32))
        rows = range(n_tu + n_qd)[part]
        batch: list[np.ndarray] = []
        start = rows.start
        for image in images:
            batch.append(preprocess_sketch(image, size, thin=recipe.thin_strokes))
            if len(batch) == 64:
                target[start : start + 64] = backbone.embed(np.stack(batch))
                start, done, batch = start + 64, done + 64, []
                if progress:
                    progress(done, total)
        if batch:
            target[start : start + len(batch)] = backbone.embed(np.stack(batch))
            done += len(batch)
    return ViewCache(
        labels=np.array([label for _, label in files] + [WORD_ALIASES.get(d.word, d.word) for d in drawings]),
        source=np.array(["tu"] * n_tu + ["qd"] * n_qd),
        keys=np.array([path.stem for path, _ in files] + [d.key_id for d in drawings]),
        fold=np.concatenate([np.full(n_tu, -1, dtype=np.int64), quickdraw_folds(drawings)]),
        views=views,
    )


def _cut_views(drawings: Sequence[Drawing], fraction: float) -> Iterable[Any]:
    return (page_render(cut_strokes(d.strokes, fraction)) for d in drawings)


@dataclass(frozen=True)
class TrainingSet:
    """Rows to train on: backbone vectors and their class index."""

    vectors: np.ndarray
    targets: np.ndarray
    classes: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_cache(
        cls,
        cache: ViewCache,
        rows: np.ndarray,
        recipe: HeadRecipe = HeadRecipe(),
        photos: np.ndarray | None = None,
    ) -> TrainingSet:
        """The views of ``rows`` (a boolean mask over the cache's items) that the recipe trains on.

        TU-Berlin rows give their plain view and ``raster_views`` augmented ones; Quick, Draw! rows their plain
        view, their 25/50/75% cuts and ``drawing_views`` augmented ones. ``photos`` (backbone vectors) become
        :data:`PHOTO_CLASS` rows when the recipe's ``photo_weight`` is above 0.
        """
        tu = rows & (cache.source == "tu")
        qd = rows & (cache.source == "qd")
        parts = [(tu | qd, "plain", 1.0)]
        parts += [(qd, f"cut{round(c * 100)}", recipe.cut_weight) for c in recipe.cuts]
        parts += [(tu, f"raster{v}", 1.0) for v in range(recipe.raster_views)]
        parts += [(qd, f"drawing{v}", 1.0) for v in range(recipe.drawing_views)]
        parts = [part for part in parts if part[0].any()]
        missing = [name for _, name, _ in parts if name not in cache.views]
        if missing:
            raise ValueError(f"the view cache has no {', '.join(missing)} views: rebuild it for this recipe")
        vectors = np.concatenate([cache.views[name][mask] for mask, name, _ in parts])
        labels = np.concatenate([cache.labels[mask] for mask, _, _ in parts])
        weights = np.concatenate([np.full(int(mask.sum()), weight, np.float32) for mask, _, weight in parts])
        if photos is not None and len(photos) and recipe.photo_weight > 0:
            vectors = np.concatenate([vectors, np.asarray(photos, dtype=vectors.dtype)])
            labels = np.concatenate([labels, np.full(len(photos), PHOTO_CLASS)])
            weights = np.concatenate([weights, np.full(len(photos), recipe.photo_weight, np.float32)])
        classes = np.unique(labels)
        return cls(vectors=vectors, targets=np.searchsorted(classes, labels), classes=classes, weights=weights)


def build_sketch_head(input_dim: int, num_classes: int, recipe: HeadRecipe = HeadRecipe()) -> keras.Model:
    """One head: input scaling, [Dropout, Dense ReLU] per hidden width, Dropout, Dense softmax named ``classes``.

    Layer names follow :mod:`indexing.features.heads` (``hidden_<i>``, ``classes``), so
    :class:`~indexing.features.heads.HeadBackbone` serves it like Models 1-5.

    Args:
        input_dim: Width of the backbone's vectors.
        num_classes: C.
        recipe: Widths, dropout and seed.

    Returns:
        An uncompiled Keras model ``(None, input_dim) -> (None, num_classes)``.
    """
    import keras

    inputs = keras.Input((input_dim,), name="features")
    x = keras.layers.Rescaling(math.sqrt(input_dim), name="input_scale")(inputs)
    for i, units in enumerate(recipe.hidden, start=1):
        x = keras.layers.Dropout(recipe.dropout, seed=recipe.seed + i, name=f"dropout_{i}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
    x = keras.layers.Dropout(recipe.dropout, seed=recipe.seed, name="dropout_out")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=RETRIEVAL_LAYER)(x)
    return keras.Model(inputs, outputs, name="sketch_head")


def ensemble_head(members: Sequence[keras.Model]) -> keras.Model:
    """Heads of one input and one class list as one model whose ``classes`` output is their mean probabilities.

    Member ``m``'s layers are renamed ``m<m>_<name>``; a single head is returned as it is.

    Raises:
        ValueError: No member, or members of different input or output widths.
    """
    import keras

    if not members:
        raise ValueError("an ensemble needs at least one head")
    if len(members) == 1:
        return members[0]
    shapes = {(int(m.input_shape[-1]), int(m.output_shape[-1])) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"the heads of an ensemble must agree in input and output widths, got {sorted(shapes)}")
    ((input_dim, _),) = shapes
    inputs = keras.Input((input_dim,), name="features")
    outputs = []
    for m, member in enumerate(members):
        x = inputs
        for layer in member.layers[1:]:  # the layers after the Input, in order (a chain)
            copy = layer.__class__.from_config(layer.get_config() | {"name": f"m{m}_{layer.name}"})
            x = copy(x)
            copy.set_weights(layer.get_weights())
        outputs.append(x)
    mean = keras.layers.Average(name=RETRIEVAL_LAYER)(outputs)
    return keras.Model(inputs, mean, name="sketch_head_ensemble")


def ensemble_members(head: keras.Model) -> int:
    """How many heads ``head`` averages (1 for a single head)."""
    return sum(1 for layer in head.layers if layer.name.endswith(f"_{RETRIEVAL_LAYER}")) or 1


def fit_sketch_head(data: TrainingSet, recipe: HeadRecipe = HeadRecipe(), *, verbose: int = 0) -> keras.Model:
    """Train the head (each of the recipe's ``members``, independently) on cached backbone vectors.

    Args:
        data: The rows.
        recipe: The recipe.
        verbose: Keras's (0 silent, 2 one line per epoch).

    Returns:
        The trained head, or the :func:`ensemble_head` of the members.
    """
    if recipe.members < 1:
        raise ValueError(f"members must be >= 1, got {recipe.members}")
    members = [_fit_one(data, replace(recipe, seed=recipe.seed + m, members=1), verbose) for m in range(recipe.members)]
    return ensemble_head(members)


def _fit_one(data: TrainingSet, recipe: HeadRecipe, verbose: int) -> keras.Model:
    import keras

    keras.utils.set_random_seed(recipe.seed)
    head = build_sketch_head(int(data.vectors.shape[1]), len(data.classes), recipe)
    head.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss="sparse_categorical_crossentropy")
    head.fit(
        data.vectors,
        data.targets,
        sample_weight=data.weights,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        verbose=verbose,
    )
    return head


def save_head(head: keras.Model, path: Path, *, classes: Sequence[str], meta: dict[str, Any]) -> int:
    """Write a head's weights as int8 (one scale per output unit) with its classes and metadata; returns the size.

    Each kernel column is stored as ``round(w / s)`` in int8 with ``s = max|w| / 127`` (symmetric, per output
    unit, as TFLite quantises Dense weights) and the biases as float16: about a quarter of float32, so three heads
    over the 2304-d ``mobilenet_v1v2`` vectors stay near 7 MB.

    Raises:
        ValueError: The head was not built by :func:`build_sketch_head` or ``classes`` does not match its output.
    """
    if int(head.output_shape[-1]) != len(classes):
        raise ValueError(f"head has {head.output_shape[-1]} outputs but {len(classes)} classes were given")
    members = ensemble_members(head)
    arrays: dict[str, np.ndarray] = {}
    for m in range(members):
        prefix = f"m{m}_" if members > 1 else ""
        dense = [
            layer
            for layer in head.layers
            if layer.name.startswith(f"{prefix}hidden_") or layer.name == f"{prefix}{RETRIEVAL_LAYER}"
        ]
        if not dense or dense[-1].name != f"{prefix}{RETRIEVAL_LAYER}":
            raise ValueError(f"head {head.name} has no {prefix}{RETRIEVAL_LAYER!r} output layer")
        for i, layer in enumerate(dense):
            kernel, bias = layer.get_weights()
            arrays[f"{prefix}kernel_{i}"], arrays[f"{prefix}kernel_scale_{i}"] = quantize_int8(kernel)
            arrays[f"{prefix}bias_{i}"] = bias.astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays.update(classes=np.array(list(classes)), meta=np.array(json.dumps(meta, sort_keys=True)))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
    return path.stat().st_size


def quantize_int8(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: int8 ``q`` and float32 per-column ``scale`` with ``q * scale`` ~ ``kernel`` (symmetric).

    A column of zeros gets scale 1 (its values stay 0).
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    peak = np.abs(kernel).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(kernel / scale), -127, 127).astype(np.int8), scale


def load_head_file(path: str | Path) -> tuple[keras.Model, list[str], dict[str, Any]]:
    """Rebuild a head written by :func:`save_head`.

    Returns:
        ``(head, classes, meta)``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a head file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no head file at {path}")
    with np.load(path, allow_pickle=False) as data:
        prefixes = ["m0_"] if "m0_kernel_0" in data.files else [""]
        while f"m{len(prefixes)}_kernel_0" in data.files:
            prefixes.append(f"m{len(prefixes)}_")
        if "classes" not in data.files or f"{prefixes[0]}kernel_0" not in data.files:
            raise ValueError(f"{path} is not a sketch head file (no classes / kernel_0)")
        classes = [str(c) for c in data["classes"]]
        meta = json.loads(str(data["meta"]))
        members = [_member(data, prefix, len(classes)) for prefix in prefixes]
    return ensemble_head(members), classes, meta


def _kernel(data: Any, name: str) -> np.ndarray:
    """A stored kernel as float32: an int8 one times its per-column scale, or a float16 one (older head files)."""
    kernel = data[name].astype(np.float32)
    scale_name = name.replace("kernel_", "kernel_scale_")
    return kernel * data[scale_name].astype(np.float32) if scale_name in data.files else kernel


def _member(data: Any, prefix: str, num_classes: int) -> keras.Model:
    """One head of a head file (its arrays named ``<prefix>kernel_<i>`` and ``<prefix>bias_<i>``)."""
    layers = sum(1 for name in data.files if name.startswith(f"{prefix}bias_"))
    weights = [
        (_kernel(data, f"{prefix}kernel_{i}"), data[f"{prefix}bias_{i}"].astype(np.float32)) for i in range(layers)
    ]
    hidden = tuple(int(kernel.shape[1]) for kernel, _ in weights[:-1])
    head = build_sketch_head(int(weights[0][0].shape[0]), num_classes, HeadRecipe(hidden=hidden))
    for i, (kernel, bias) in enumerate(weights):
        name = RETRIEVAL_LAYER if i == layers - 1 else f"hidden_{i + 1}"
        head.get_layer(name).set_weights([kernel, bias])
    return head
