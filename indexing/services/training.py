"""Fine-tuned extractors (the paper's Models 1-5): train a head on a collection, store it as an Extractor row.

The numerical work is in ``indexing.features.heads`` / ``indexing.features.training`` (no Django); this module
loads the data (stored Feature rows of the base extractor where they exist), saves the ``.keras`` file and the
training-curve PNG under ``MEDIA_ROOT/extractors/``, and builds the Backbone of a trained extractor.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction

from indexing.features.backbones import Backbone, available_backbones, l2_normalize, load_backbone, warm_up
from indexing.features.crossdomain import JOINT_HEAD, PHOTO_INPUTS, JointBackbone, load_joint_head, save_joint_head
from indexing.features.heads import SIAMESE_MODEL, HeadBackbone, head_name, head_param_count, load_head
from indexing.features.pipeline import prepare_image
from indexing.features.sketch_head import RETRIEVAL_LAYER as SKETCH_RETRIEVAL_LAYER
from indexing.features.sketch_head import SHIPPED_HEAD, load_head_file
from indexing.features.training import (
    CUT_LAYERS,
    PIXEL_SCALING,
    STRATEGIES,
    FitResult,
    class_recall,
    curve_png,
    fine_tune,
    fit_head,
    frozen_and_tail,
    head_embed,
    nearest_neighbour_labels,
    predict_in_batches,
    scan_map,
    stratified_split,
    whole_trunk,
)
from indexing.models import Collection, Extractor, Feature, Image
from indexing.selectors import features_load
from indexing.services import extraction

EXTRACTORS_DIR = "extractors"  # under MEDIA_ROOT, where Extractor.weights_file points
SKETCH_HEAD = "sketch"  # Extractor.head of the served sketch head (indexing.features.sketch_head)
SKETCH_EXTRACTOR = "mobilenet_v1-sketch"  # the shipped head's Extractor row
TRAINED_WEIGHTS = "trained"


class TrainingError(ValueError):
    """A training request that cannot run (unknown names, unsupported strategy, missing data)."""


@dataclass
class TrainingReport:
    extractor: Extractor
    base_test_map: float
    subset: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        d = self.extractor.details
        return (
            f"{self.extractor.name}: {d['strategy']}, test accuracy {d['test_accuracy']:.3f}, "
            f"test mAP {d['test_map']:.4f} (untrained {d['base_extractor']}: {self.base_test_map:.4f}; "
            f"{d['test_queries']} test queries vs {d['gallery_size']} train), "
            f"params {self.extractor.param_count:,}, {d['training_seconds']:.1f} s training, "
            f"epochs {d['epochs']}; {self.subset}"
        )


@dataclass
class _Split:
    image_ids: np.ndarray  # (n,) int64
    inputs: np.ndarray  # (n, dim) base vectors, or (n, ...) cut activations / images for fine-tuning
    labels: np.ndarray  # (n,) str


def base_extractor_resolve(backbone: str) -> Extractor:
    """The untrained extractor of ``backbone``: an existing head-less row, else a new row for a registered one."""
    existing = (
        Extractor.objects.filter(name=backbone, head="").first()
        or Extractor.objects.filter(backbone=backbone, head="").order_by("pk").first()
    )
    if existing is not None:
        return existing
    if backbone not in available_backbones():
        raise TrainingError(f"unknown backbone {backbone!r}; available: {', '.join(available_backbones())}")
    try:
        return extraction.extractor_get_or_create(backbone=backbone)
    except (ValueError, RuntimeError) as exc:  # WeightsUnavailableError is a RuntimeError
        raise TrainingError(str(exc)) from exc


def _collection_resolve(name: str) -> Collection:
    collection = Collection.objects.filter(name=name).first()
    if collection is None:
        known = ", ".join(Collection.objects.values_list("name", flat=True)) or "none"
        raise TrainingError(f"unknown collection {name!r} (known: {known})")
    return collection


def _limit_per_class(ids: np.ndarray, labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Rows to keep: the first ``per_class`` of each label by image id (all when None)."""
    if per_class is None:
        return np.arange(len(ids))
    keep = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in np.unique(labels)])
    return np.sort(keep)


def _features_split(*, base: Extractor, collection: Collection, split: str, per_class: int | None) -> _Split:
    matrix = features_load(extractor=base, collection_ids=[collection.pk], split=split)
    labelled = matrix.labels != ""
    ids, vectors, labels = matrix.image_ids[labelled], matrix.vectors[labelled], matrix.labels[labelled]
    keep = _limit_per_class(ids, labels, per_class)
    return _Split(ids[keep], vectors[keep], labels[keep])


def _image_split(
    *, collection: Collection, split: str, per_class: int | None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    rows = list(
        Image.objects.filter(collection=collection, split=split)
        .exclude(label="")
        .order_by("pk")
        .values_list("pk", "file", "label")
    )
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    labels = np.array([r[2] for r in rows], dtype=str) if rows else np.empty(0, str)
    keep = _limit_per_class(ids, labels, per_class)
    return ids[keep], [rows[i][1] for i in keep], labels[keep]


def _prepared_images(files: list[str], size: int, kind: str) -> np.ndarray:
    """Decode and preprocess image files exactly as extraction does, in a small thread pool."""
    from django.core.files.storage import default_storage

    prepare = functools.partial(prepare_image, size=size, kind=kind)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=2) as pool:
        arrays = list(pool.map(lambda name: prepare(default_storage.path(name)), files))
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)


def _save_curve(name: str, fit: FitResult, title: str) -> str:
    folder = Path(settings.MEDIA_ROOT) / EXTRACTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}-curve.png").write_bytes(curve_png(fit.history, title=title, phase_epochs=fit.phase_epochs))
    return f"{EXTRACTORS_DIR}/{name}-curve.png"


def extractor_train(
    *,
    collection_name: str,
    backbone: str,
    model: int,
    strategy: str = "head-only",
    epochs: int = 30,
    fine_tune_epochs: int | None = None,
    batch_size: int = 64,
    val_fraction: float = 0.1,
    name: str | None = None,
    layer: str | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    replace: bool = False,
    seed: int = 0,
    verbose: int = 0,
) -> TrainingReport:
    """Train Model ``model`` on ``collection_name`` over ``backbone`` and store it as a new Extractor row."""
    if model not in (1, 2, 3, 4, 5):
        raise TrainingError(f"model must be 1..5, got {model!r}")
    if strategy not in STRATEGIES:
        raise TrainingError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if epochs < 1 or batch_size < 1:
        raise TrainingError(f"epochs and batch size must be >= 1, got {epochs} and {batch_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingError(f"val fraction must be in [0, 1), got {val_fraction}")
    collection = _collection_resolve(collection_name)
    base = base_extractor_resolve(backbone)
    if strategy != "head-only":
        if base.backbone not in CUT_LAYERS:
            raise TrainingError(
                f"backbone {base.backbone} cannot be fine-tuned (not a trainable Keras model): use --strategy head-only"
            )
        if model == SIAMESE_MODEL:
            raise TrainingError("model 3 (siamese) is trained head-only here: use --strategy head-only")
    head = head_name(model)
    suffix = "" if strategy == "head-only" else f"-{strategy}"
    name = name or f"{base.name}-{head}{suffix}"
    existing = Extractor.objects.filter(name=name).first()
    if existing is not None and not replace:
        raise TrainingError(f"extractor {name!r} exists: pass --name for another name or --replace")

    notes: list[str] = []
    kind = "photo" if collection.kind == Collection.Kind.PHOTOS else "sketch"
    if strategy == "head-only":
        # Reuse the stored Feature rows of the base; embed only the images that have none yet.
        missing = (
            Image.objects.filter(collection=collection)
            .exclude(pk__in=Feature.objects.filter(extractor=base).values("image_id"))
            .count()
        )
        if missing:
            notes.append(f"embedded {missing} images without a {base.name} vector first")
            extraction.collection_extract_features(collection=collection, extractor=base)
        train = _features_split(base=base, collection=collection, split=Image.Split.TRAIN, per_class=train_per_class)
        test = _features_split(base=base, collection=collection, split=Image.Split.TEST, per_class=test_per_class)
    else:
        train_ids, train_files, train_labels = _image_split(
            collection=collection, split=Image.Split.TRAIN, per_class=train_per_class
        )
        test_ids, test_files, test_labels = _image_split(
            collection=collection, split=Image.Split.TEST, per_class=test_per_class
        )
        train = _Split(train_ids, _prepared_images(train_files, base.input_size, kind), train_labels)
        test = _Split(test_ids, _prepared_images(test_files, base.input_size, kind), test_labels)

    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise TrainingError(f"collection {collection.name} needs at least two labelled classes in its train split")
    in_train = np.isin(test.labels, classes)
    test = _Split(test.image_ids[in_train], test.inputs[in_train], test.labels[in_train])
    if len(test.labels) == 0:
        raise TrainingError(f"collection {collection.name} has no labelled test image of a trained class")
    train_targets = np.searchsorted(classes, train.labels)
    fit_rows, val_rows = stratified_split(train.labels, val_fraction, seed=seed)

    started = time.perf_counter()
    trunk = None
    if strategy == "head-only":
        train_vectors, test_vectors = train.inputs, test.inputs
    else:
        keras_base = load_backbone(base.backbone, weights=base.weights, input_size=base.input_size)
        base_model = keras_base.model  # type: ignore[attr-defined]
        scale, offset = PIXEL_SCALING[base.backbone]
        if strategy == "two-blocks":
            frozen, trunk = frozen_and_tail(base_model, CUT_LAYERS[base.backbone])
            # The frozen front runs once per image; its output is the cache the two blocks train on.
            front = functools.partial(_scaled_forward, frozen, scale, offset)
            train = _Split(
                train.image_ids, predict_in_batches(front, train.inputs, 32).astype(np.float16), train.labels
            )
            test = _Split(test.image_ids, predict_in_batches(front, test.inputs, 32).astype(np.float16), test.labels)
        else:
            trunk = whole_trunk(base_model, scale, offset)
        train_vectors = _pooled(trunk, train.inputs)
        test_vectors = _pooled(trunk, test.inputs)
        notes.append(f"cached {strategy} inputs of {len(train.labels) + len(test.labels)} images")
    base_map = scan_map(test_vectors, test.labels, train_vectors, train.labels)

    validation = (train_vectors[val_rows], train_targets[val_rows]) if len(val_rows) else None
    fit = fit_head(
        model,
        train_vectors[fit_rows],
        train_targets[fit_rows],
        num_classes=len(classes),
        validation=validation,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        verbose=verbose,
    )
    if trunk is not None:
        # Phase 2 of the paper's procedure: unfreeze, train the blocks and the head jointly at a lower rate.
        joint, history = fine_tune(
            trunk,
            fit.head,
            train.inputs[fit_rows],
            train_targets[fit_rows],
            validation=(train.inputs[val_rows], train_targets[val_rows]) if len(val_rows) else None,
            epochs=fine_tune_epochs or max(1, epochs // 3),
            batch_size=min(batch_size, 32),
            seed=seed,
            verbose=verbose,
        )
        fit.extend(history)
        train_vectors = _pooled(trunk, train.inputs)
        test_vectors = _pooled(trunk, test.inputs)
    fit.seconds = time.perf_counter() - started

    # Score: classifier on the test split, and the retrieval embedding (test queries vs the train gallery).
    gallery = head_embed(fit.head, train_vectors, layer)
    queries = head_embed(fit.head, test_vectors, layer)
    if model == SIAMESE_MODEL:
        predicted = nearest_neighbour_labels(queries, gallery, train.labels)
        recall_method = "1-NN of the siamese embedding against the train split"
    else:
        probabilities = predict_in_batches(lambda x: fit.head(x, training=False), test_vectors, 512)
        predicted = classes[np.argmax(probabilities, axis=1)]
        recall_method = "softmax classifier"
    accuracy, per_class = class_recall(predicted, test.labels)
    test_map = scan_map(queries, test.labels, gallery, train.labels)

    head_params = head_param_count(model, int(train_vectors.shape[1]), len(classes))
    retrieval_width = int(queries.shape[1])
    folder = Path(settings.MEDIA_ROOT) / EXTRACTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights_name = f"{EXTRACTORS_DIR}/{name}.keras"
    if trunk is None:
        fit.head.save(folder / f"{name}.keras")
        base_params = base.param_count
    else:
        _bundle(base_model, fit.head).save(folder / f"{name}.keras")
        base_params = int(base_model.count_params())
    curve = _save_curve(name, fit, f"{name} on {collection.name} ({strategy})")
    subset = (
        "all images"
        if train_per_class is None and test_per_class is None
        else f"subset: {len(train.labels)} train / {len(test.labels)} test images"
    )
    details: dict[str, Any] = {
        "strategy": strategy,
        "collection": collection.name,
        "base_extractor": base.name,
        "base_weights": base.weights,
        "retrieval_layer": layer or f"hidden_{_last_hidden(fit.head)}",
        "classes": [str(c) for c in classes],
        "epochs": fit.phase_epochs,
        "max_epochs": epochs,
        "batch_size": batch_size,
        "val_fraction": val_fraction,
        "seed": seed,
        "train_images": int(len(fit_rows)),
        "val_images": int(len(val_rows)),
        "test_queries": int(len(test.labels)),
        "gallery_size": int(len(train.labels)),
        "subset": subset,
        "test_accuracy": accuracy,
        "test_map": test_map,
        "base_test_map": base_map,
        "per_class_recall": per_class,
        "recall_method": recall_method,
        "head_params": head_params,
        "training_seconds": round(fit.seconds, 2),
        "history": fit.history,
        "curve": curve,
    }
    fields = {
        "backbone": base.backbone,
        "head": head,
        "weights": TRAINED_WEIGHTS,
        "input_size": base.input_size,
        "output_dim": retrieval_width,
        "param_count": base_params + head_params,
        "details": details,
    }
    trained = _trained_extractor_save(
        name=name, existing=existing, fields=fields, weights_name=weights_name, notes=notes
    )
    return TrainingReport(extractor=trained, base_test_map=base_map, subset=subset, notes=notes)


def _trained_extractor_save(
    *, name: str, existing: Extractor | None, fields: dict[str, Any], weights_name: str, notes: list[str]
) -> Extractor:
    """Create the Extractor row of a trained head, or replace ``existing`` and delete its now stale vectors."""
    with transaction.atomic():
        if existing is not None:
            # Its vectors came from the previous weights: drop them so extract_features recomputes them.
            Feature.objects.filter(extractor=existing).delete()
            for key, value in fields.items():
                setattr(existing, key, value)
            existing.weights_file.name = weights_name
            existing.save()
            notes.append(f"replaced {name} and deleted its old vectors")
            return existing
        row = Extractor(name=name, **fields)
        row.weights_file.name = weights_name
        row.save()
        return row


def _last_hidden(head: Any) -> int:
    return sum(1 for lyr in head.layers if lyr.name.startswith("hidden_"))


def _scaled_forward(model: Any, scale: float, offset: float, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images.astype(np.float32) * scale + offset, training=False))


def _pooled(trunk: Any, inputs: np.ndarray) -> np.ndarray:
    """The trunk's pooled output, L2-normalised: what the head sees (and Backbone.embed returns)."""
    return l2_normalize(predict_in_batches(lambda x: trunk(x.astype(np.float32), training=False), inputs, 32))


def _bundle(base_model: Any, head: Any) -> Any:
    """``scaled image -> fine-tuned base -> L2 normalisation -> head``, saved so the fine-tuned base travels along."""
    import keras

    head_layer = keras.Model(head.inputs, head.outputs, name="head")  # load_head() finds it by this name
    images = keras.Input(base_model.input_shape[1:], name="scaled_image")
    pooled = keras.layers.UnitNormalization(name="l2_normalize")(base_model(images))
    return keras.Model(images, head_layer(pooled), name="bundle")


# --------------------------------------------------------------------------------------------------------------
# Running a trained extractor


def extractor_head_backbone(extractor: Extractor) -> Backbone:
    """The Backbone of a trained extractor: its base (fine-tuned where it was) + the head's retrieval layer."""
    details = extractor.details or {}
    if extractor.head == SKETCH_HEAD:
        # The served head (indexing.features.sketch_head): shipped in the package, or trained into MEDIA_ROOT.
        file = Path(settings.MEDIA_ROOT) / str(extractor.weights_file.name) if extractor.weights_file else SHIPPED_HEAD
        return _sketch_head_backbone_load(
            name=extractor.name,
            backbone=extractor.backbone,
            base_weights=str(details.get("base_weights") or ""),
            path=str(file),
            mtime=file.stat().st_mtime if file.exists() else 0.0,
        )
    if not extractor.weights_file:
        raise ValueError(f"extractor {extractor.name} has head {extractor.head!r} but no weights file")
    path = Path(settings.MEDIA_ROOT) / str(extractor.weights_file.name)
    if extractor.head == JOINT_HEAD:
        return _joint_backbone_load(
            name=extractor.name,
            backbone=extractor.backbone,
            base_weights=str(details.get("base_weights") or ""),
            photo_input=str(details.get("photo_input") or "photo"),
            path=str(path),
            mtime=path.stat().st_mtime if path.exists() else 0.0,
        )
    return _head_backbone_load(
        name=extractor.name,
        backbone=extractor.backbone,
        base_weights=str(details.get("base_weights") or ""),
        input_size=extractor.input_size,
        path=str(path),
        layer=details.get("retrieval_layer"),
        mtime=path.stat().st_mtime if path.exists() else 0.0,
    )


@functools.lru_cache(maxsize=4)
def _head_backbone_load(
    *, name: str, backbone: str, base_weights: str, input_size: int, path: str, layer: str | None, mtime: float
) -> Backbone:
    head, bundle = load_head(path)
    weights = base_weights or None
    if bundle is None:
        # Head-only: the base is unchanged, so share the process-wide cached base backbone.
        base = extraction.extractor_backbone_load(backbone=backbone, weights=weights or _default_weights(backbone))
    else:
        # Fine-tuned: a private copy of the base (the cached one must keep its pretrained weights).
        base = load_backbone(backbone, weights=weights, input_size=input_size)
        nested = next(lyr for lyr in bundle.layers if lyr.name not in ("head", "l2_normalize") and lyr.weights)
        base.model.set_weights(nested.get_weights())  # type: ignore[attr-defined]
    wrapper = HeadBackbone(base, head, name=name, layer=layer)
    warm_up(wrapper)
    return wrapper


@functools.lru_cache(maxsize=4)
def _sketch_head_backbone_load(*, name: str, backbone: str, base_weights: str, path: str, mtime: float) -> Backbone:
    head, _, _ = load_head_file(path)
    base = extraction.extractor_backbone_load(backbone=backbone, weights=base_weights or _default_weights(backbone))
    wrapper = HeadBackbone(base, head, name=name, layer=SKETCH_RETRIEVAL_LAYER, weights="shipped")
    warm_up(wrapper)
    return wrapper


def sketch_extractor_get_or_create(*, path: Path = SHIPPED_HEAD, name: str = SKETCH_EXTRACTOR) -> Extractor:
    """The Extractor row of a sketch head file (indexing.features.sketch_head), created or updated from the file.

    The shipped file is read from the package (no copy under MEDIA_ROOT); another file is served from its path,
    which must lie under MEDIA_ROOT. A row whose file changed (other weights: its ``meta`` differs) loses its
    vectors, so the next extraction recomputes them.
    """
    head, classes, meta = load_head_file(path)
    base = base_extractor_resolve(str(meta.get("backbone") or "mobilenet_v1"))
    fields: dict[str, Any] = {
        "backbone": base.backbone,
        "head": SKETCH_HEAD,
        "weights": "shipped" if path == SHIPPED_HEAD else TRAINED_WEIGHTS,
        "input_size": base.input_size,
        "output_dim": len(classes),
        "param_count": int(base.param_count) + int(head.count_params()),
        "details": {
            "strategy": "head-only",
            "base_extractor": base.name,
            "base_weights": base.weights,
            "retrieval_layer": SKETCH_RETRIEVAL_LAYER,
            "classes": classes,
            "sketch_dilate": (base.details or {}).get("sketch_dilate"),
            "training": meta,
        },
    }
    existing = Extractor.objects.filter(name=name).first()
    if existing is not None and existing.head != SKETCH_HEAD:
        raise TrainingError(f"extractor {name!r} exists and is not a sketch head: choose another name")
    if existing is not None and existing.details == fields["details"] and existing.weights == fields["weights"]:
        return existing
    weights_name = ""
    if path != SHIPPED_HEAD:
        media = Path(settings.MEDIA_ROOT).resolve()
        if media not in path.resolve().parents:
            raise TrainingError(f"a trained head file must lie under MEDIA_ROOT ({media}), not {path}")
        weights_name = str(path.resolve().relative_to(media))
    notes: list[str] = []
    row = _trained_extractor_save(name=name, existing=existing, fields=fields, weights_name=weights_name, notes=notes)
    _sketch_head_backbone_load.cache_clear()
    return row


@functools.lru_cache(maxsize=4)
def _joint_backbone_load(
    *, name: str, backbone: str, base_weights: str, photo_input: str, path: str, mtime: float
) -> Backbone:
    sketch_branch, photo_branch = load_joint_head(path)
    base = extraction.extractor_backbone_load(backbone=backbone, weights=base_weights or _default_weights(backbone))
    wrapper = JointBackbone(base, sketch_branch, photo_branch, name=name, photo_input=photo_input)
    warm_up(wrapper)
    return wrapper


def joint_extractor_save(
    *,
    name: str,
    backbone: str,
    sketch_branch: Any,
    photo_branch: Any,
    photo_input: str,
    details: dict[str, Any],
) -> tuple[Extractor, list[str]]:
    """Store a trained joint sketch/photo head (``indexing.features.crossdomain``) as a servable Extractor.

    The file goes to ``MEDIA_ROOT/extractors/<name>.keras``. Extracting features with the extractor embeds sketch
    collections with the sketch branch and photo collections with the photo branch; a drawn query always takes
    the sketch branch. An existing extractor of the same name is replaced and its old vectors are deleted.

    Returns:
        The row and notes for the user.

    Raises:
        TrainingError: Unknown base backbone, bad ``photo_input``, or ``name`` taken by a non-joint extractor.
    """
    if photo_input not in PHOTO_INPUTS:
        raise TrainingError(f"photo_input must be one of {PHOTO_INPUTS}, got {photo_input!r}")
    base = base_extractor_resolve(backbone)
    if int(sketch_branch.input_shape[-1]) != base.output_dim:
        raise TrainingError(
            f"the head takes {sketch_branch.input_shape[-1]}-d vectors, {base.name} gives {base.output_dim}-d"
        )
    existing = Extractor.objects.filter(name=name).first()
    if existing is not None and existing.head != JOINT_HEAD:
        raise TrainingError(f"extractor {name!r} exists and is not a joint head: choose another name")
    folder = Path(settings.MEDIA_ROOT) / EXTRACTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights_name = f"{EXTRACTORS_DIR}/{name}.keras"
    save_joint_head(str(folder / f"{name}.keras"), sketch_branch, photo_branch)
    shared = sketch_branch is photo_branch
    head_params = int(sketch_branch.count_params()) + (0 if shared else int(photo_branch.count_params()))
    fields: dict[str, Any] = {
        "backbone": base.backbone,
        "head": JOINT_HEAD,
        "weights": TRAINED_WEIGHTS,
        "input_size": base.input_size,
        "output_dim": int(sketch_branch.output_shape[-1]),
        "param_count": int(base.param_count) + head_params,
        "details": {
            "base_extractor": base.name,
            "base_weights": base.weights,
            "photo_input": photo_input,
            "head_params": head_params,
            "sketch_dilate": (base.details or {}).get("sketch_dilate"),
            **details,
        },
    }
    notes: list[str] = []
    row = _trained_extractor_save(name=name, existing=existing, fields=fields, weights_name=weights_name, notes=notes)
    _joint_backbone_load.cache_clear()
    return row, notes


def _default_weights(backbone: str) -> str:
    from indexing.features.backbones import backbone_spec

    try:
        return backbone_spec(backbone).default_weights
    except ValueError:
        return "none"


# --------------------------------------------------------------------------------------------------------------
# Comparing the trained extractors (the paper's Figure 4: test mAP against model complexity)


@dataclass(frozen=True)
class ComparisonRow:
    collection: str
    extractor: str
    backbone: str
    head: str  # "" for an untrained base
    strategy: str
    params: int
    test_map: float
    test_accuracy: float | None
    source: str  # "features": scan of stored Feature rows; "training": the figure recorded at training time


def _scan_map_of_features(extractor: Extractor, collection: Collection) -> float | None:
    train = features_load(extractor=extractor, collection_ids=[collection.pk], split=Image.Split.TRAIN)
    test = features_load(extractor=extractor, collection_ids=[collection.pk], split=Image.Split.TEST)
    train_labelled, test_labelled = train.labels != "", test.labels != ""
    if not train_labelled.any() or not test_labelled.any():
        return None
    try:
        return scan_map(
            test.vectors[test_labelled],
            test.labels[test_labelled],
            train.vectors[train_labelled],
            train.labels[train_labelled],
        )
    except ValueError:
        return None


def extractor_comparison(*, collection_name: str | None = None) -> list[ComparisonRow]:
    """Every trained extractor of a collection (or of every collection trained on) and the untrained bases.

    The test mAP is a sequential scan of the stored vectors (test split queries against the train split) when the
    extractor has them for the collection, else the figure measured at training time.
    """
    if collection_name is not None:
        collections = [_collection_resolve(collection_name)]
    else:
        names = {
            str((e.details or {}).get("collection"))
            for e in Extractor.objects.exclude(head="")
            if (e.details or {}).get("collection")
        }
        collections = list(Collection.objects.filter(name__in=names).order_by("name"))
    rows: list[ComparisonRow] = []
    for collection in collections:
        for extractor in Extractor.objects.order_by("head", "name"):
            details = extractor.details or {}
            if extractor.head and details.get("collection") != collection.name:
                continue
            value = _scan_map_of_features(extractor, collection)
            source = "features"
            if value is None:
                if not extractor.head:
                    continue  # an untrained base with no vectors for this collection: nothing to compare
                value, source = float(details["test_map"]), "training"
            accuracy = details.get("test_accuracy")
            rows.append(
                ComparisonRow(
                    collection=collection.name,
                    extractor=extractor.name,
                    backbone=extractor.backbone,
                    head=extractor.head,
                    strategy=str(details.get("strategy", "untrained" if not extractor.head else "")),
                    params=int(extractor.param_count),
                    test_map=float(value),
                    test_accuracy=float(accuracy) if accuracy is not None else None,
                    source=source,
                )
            )
    return rows


def comparison_plot_png(rows: list[ComparisonRow], *, title: str) -> bytes:
    """Test mAP (x) against parameters (y), one labelled point per extractor, as the paper's Figure 4."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=110)
    axes = figure.add_subplot()
    for row in rows:
        marker = "s" if not row.head else "o"
        axes.scatter([row.test_map], [row.params / 1e6], marker=marker)
        axes.annotate(
            row.extractor, (row.test_map, row.params / 1e6), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
    axes.set_xlabel("test mAP (sequential scan)")
    axes.set_ylabel("parameters (millions)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def comparison_plot_save(rows: list[ComparisonRow], *, collection_name: str | None) -> str:
    """Write the comparison figure under MEDIA_ROOT/extractors/ and return its media-relative path."""
    suffix = f"-{collection_name}" if collection_name else ""
    relative = f"{EXTRACTORS_DIR}/compare_models{suffix}.png"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    title = f"Test mAP vs model complexity ({collection_name or 'all collections'})"
    target.write_bytes(comparison_plot_png(rows, title=title))
    return relative
