"""Fine-tuned extractors (the paper's Models 1-5): train a head on a collection, store it as an Extractor row.

The numerical work is in ``indexing.features.heads`` / ``indexing.features.training`` (no Django); this module
loads the data (stored Feature rows of the base extractor where they exist), saves the ``.keras`` file and the
training-curve PNG under ``MEDIA_ROOT/extractors/``. Running a trained extractor is ``indexing.services.backbones``;
comparing them, ``indexing.services.comparison``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from indexing.features.backbones import BACKBONES, available_backbones, l2_normalize, load_backbone
from indexing.features.heads import SIAMESE_MODEL, head_name, head_param_count
from indexing.features.pipeline import ImageKind
from indexing.features.training import (
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
from indexing.models import Collection, Extractor, Feature, Image, LSHIndex
from indexing.services import extraction
from indexing.services.backbones import extractor_thins_strokes
from indexing.services.training_data import Split, features_split, images_split

EXTRACTORS_DIR = "extractors"  # under MEDIA_ROOT, where Extractor.weights_file points
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


def base_extractor_resolve(backbone: str, *, thin: bool = False) -> Extractor:
    """The untrained extractor of ``backbone`` (thinning sketch strokes or not): an existing head-less row, else new.

    Of the head-less rows of ``backbone`` with that preprocessing, the one named after it (``mobilenet_v1``,
    ``mobilenet_v1-thin``) wins, else the oldest.
    """
    rows = [
        row
        for row in Extractor.objects.filter(backbone=backbone, head="").order_by("pk")
        if extractor_thins_strokes(row) == thin
    ]
    named = extraction.extractor_default_name(backbone, thin=thin)
    existing = next((row for row in rows if row.name == named), rows[0] if rows else None)
    if existing is not None:
        return existing
    if backbone not in available_backbones():
        raise TrainingError(f"unknown backbone {backbone!r}; available: {', '.join(available_backbones())}")
    try:
        return extraction.extractor_get_or_create(backbone=backbone, thin=thin)
    except (ValueError, RuntimeError) as exc:  # WeightsUnavailableError is a RuntimeError
        raise TrainingError(str(exc)) from exc


def collection_resolve(name: str) -> Collection:
    """The collection named ``name``; a TrainingError naming the known ones otherwise."""
    collection = Collection.objects.filter(name=name).first()
    if collection is None:
        known = ", ".join(Collection.objects.values_list("name", flat=True)) or "none"
        raise TrainingError(f"unknown collection {name!r} (known: {known})")
    return collection


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
    _request_check(model=model, strategy=strategy, epochs=epochs, batch_size=batch_size, val_fraction=val_fraction)
    run = _run_resolve(
        collection_name=collection_name, backbone=backbone, model=model, strategy=strategy, name=name, replace=replace
    )
    train, test = _splits_load(run, train_per_class=train_per_class, test_per_class=test_per_class)
    classes = np.unique(train.labels)
    fit_rows, val_rows = stratified_split(train.labels, val_fraction, seed=seed)
    started = time.perf_counter()
    inputs = _inputs_cache(run, train, test)
    base_map = scan_map(inputs.test_vectors, inputs.test.labels, inputs.train_vectors, inputs.train.labels)
    fit = _fit(
        run,
        inputs,
        np.searchsorted(classes, train.labels),
        (fit_rows, val_rows),
        num_classes=len(classes),
        epochs=epochs,
        fine_tune_epochs=fine_tune_epochs,
        batch_size=batch_size,
        seed=seed,
        verbose=verbose,
    )
    fit.seconds = time.perf_counter() - started
    score = _score(run.model, fit, inputs, classes, layer)
    weights_name, curve, base_params = _files_write(run, fit, inputs)
    subset = (
        "all images"
        if train_per_class is None and test_per_class is None
        else f"subset: {len(train.labels)} train / {len(test.labels)} test images"
    )
    details = _details(
        run,
        fit,
        score,
        classes=classes,
        layer=layer,
        options={"max_epochs": epochs, "batch_size": batch_size, "val_fraction": val_fraction, "seed": seed},
        counts={
            "train_images": int(len(fit_rows)),
            "val_images": int(len(val_rows)),
            "test_queries": int(len(test.labels)),
            "gallery_size": int(len(train.labels)),
        },
        subset=subset,
        base_map=base_map,
        curve=curve,
    )
    fields = {
        "backbone": run.base.backbone,
        "head": run.head,
        "weights": TRAINED_WEIGHTS,
        "input_size": run.base.input_size,
        "output_dim": score.retrieval_width,
        "param_count": base_params + score.head_params,
        "details": details,
    }
    trained = trained_extractor_save(
        name=run.name, existing=run.existing, fields=fields, weights_name=weights_name, notes=run.notes
    )
    return TrainingReport(extractor=trained, base_test_map=base_map, subset=subset, notes=run.notes)


@dataclass
class _Run:
    """One training request, resolved: what every step of :func:`extractor_train` reads."""

    collection: Collection
    base: Extractor
    model: int
    head: str
    strategy: str
    name: str
    existing: Extractor | None
    notes: list[str] = field(default_factory=list)
    # Where the strategy fine-tunes the base: its registered cut layer and pixel scaling (BackboneSpec).
    cut_layer: str = ""
    pixel_scaling: tuple[float, float] = (1.0, 0.0)


@dataclass
class _Inputs:
    """What the head trains on: the splits (cut activations for ``two-blocks``) and their pooled vectors."""

    train: Split
    test: Split
    train_vectors: np.ndarray
    test_vectors: np.ndarray
    trunk: Any = None  # the trainable part of the base (None for head-only)
    base_model: Any = None  # the whole Keras base (None for head-only)


@dataclass
class _Score:
    test_accuracy: float
    per_class_recall: dict[str, float]
    test_map: float
    recall_method: str
    head_params: int
    retrieval_width: int


def _request_check(*, model: int, strategy: str, epochs: int, batch_size: int, val_fraction: float) -> None:
    if model not in (1, 2, 3, 4, 5):
        raise TrainingError(f"model must be 1..5, got {model!r}")
    if strategy not in STRATEGIES:
        raise TrainingError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if epochs < 1 or batch_size < 1:
        raise TrainingError(f"epochs and batch size must be >= 1, got {epochs} and {batch_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingError(f"val fraction must be in [0, 1), got {val_fraction}")


def _run_resolve(
    *, collection_name: str, backbone: str, model: int, strategy: str, name: str | None, replace: bool
) -> _Run:
    collection = collection_resolve(collection_name)
    base = base_extractor_resolve(backbone)
    spec = BACKBONES.get(base.backbone)
    if strategy != "head-only":
        if spec is None or spec.cut_layer is None or spec.pixel_scaling is None:
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
    run = _Run(collection, base, model, head, strategy, name, existing)
    if strategy != "head-only" and spec is not None and spec.cut_layer and spec.pixel_scaling:
        run.cut_layer, run.pixel_scaling = spec.cut_layer, spec.pixel_scaling
    return run


def _splits_load(run: _Run, *, train_per_class: int | None, test_per_class: int | None) -> tuple[Split, Split]:
    """The train and test splits: stored base vectors (head-only) or prepared images; test only of trained classes."""
    collection, base = run.collection, run.base
    if run.strategy == "head-only":
        # Reuse the stored Feature rows of the base; embed only the images that have none yet.
        missing = (
            Image.objects.filter(collection=collection)
            .exclude(pk__in=Feature.objects.filter(extractor=base).values("image_id"))
            .count()
        )
        if missing:
            run.notes.append(f"embedded {missing} images without a {base.name} vector first")
            extraction.collection_extract_features(collection=collection, extractor=base)
        train = features_split(base=base, collection=collection, split=Image.Split.TRAIN, per_class=train_per_class)
        test = features_split(base=base, collection=collection, split=Image.Split.TEST, per_class=test_per_class)
    else:
        kind: ImageKind = "photo" if collection.kind == Collection.Kind.PHOTOS else "sketch"
        load = functools.partial(images_split, collection=collection, size=base.input_size, kind=kind)
        train = load(split=Image.Split.TRAIN, per_class=train_per_class)
        test = load(split=Image.Split.TEST, per_class=test_per_class)
    classes = np.unique(train.labels)
    if len(classes) < 2:
        raise TrainingError(f"collection {collection.name} needs at least two labelled classes in its train split")
    in_train = np.isin(test.labels, classes)
    test = Split(test.image_ids[in_train], test.inputs[in_train], test.labels[in_train])
    if len(test.labels) == 0:
        raise TrainingError(f"collection {collection.name} has no labelled test image of a trained class")
    return train, test


def _inputs_cache(run: _Run, train: Split, test: Split) -> _Inputs:
    """Run the frozen part of the base once per image: what the head (and the fine-tuned blocks) train on."""
    if run.strategy == "head-only":
        return _Inputs(train, test, train.inputs, test.inputs)
    keras_base = load_backbone(run.base.backbone, weights=run.base.weights, input_size=run.base.input_size)
    base_model = keras_base.model  # type: ignore[attr-defined]
    scale, offset = run.pixel_scaling
    if run.strategy == "two-blocks":
        frozen, trunk = frozen_and_tail(base_model, run.cut_layer)
        # The frozen front runs once per image; its output is the cache the two blocks train on.
        front = functools.partial(_scaled_forward, frozen, scale, offset)
        train = Split(train.image_ids, predict_in_batches(front, train.inputs, 32).astype(np.float16), train.labels)
        test = Split(test.image_ids, predict_in_batches(front, test.inputs, 32).astype(np.float16), test.labels)
    else:
        trunk = whole_trunk(base_model, scale, offset)
    run.notes.append(f"cached {run.strategy} inputs of {len(train.labels) + len(test.labels)} images")
    return _Inputs(train, test, _pooled(trunk, train.inputs), _pooled(trunk, test.inputs), trunk, base_model)


def _fit(
    run: _Run,
    inputs: _Inputs,
    targets: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    epochs: int,
    fine_tune_epochs: int | None,
    batch_size: int,
    seed: int,
    verbose: int,
) -> FitResult:
    """Phase 1 (the head on the pooled vectors) and, for a fine-tuning strategy, phase 2 (blocks and head)."""
    fit_rows, val_rows = rows
    vectors = inputs.train_vectors
    fit = fit_head(
        run.model,
        vectors[fit_rows],
        targets[fit_rows],
        num_classes=num_classes,
        validation=(vectors[val_rows], targets[val_rows]) if len(val_rows) else None,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        verbose=verbose,
    )
    if inputs.trunk is not None:
        # Phase 2 of the paper's procedure: unfreeze, train the blocks and the head jointly at a lower rate.
        train = inputs.train
        _, history = fine_tune(
            inputs.trunk,
            fit.head,
            train.inputs[fit_rows],
            targets[fit_rows],
            validation=(train.inputs[val_rows], targets[val_rows]) if len(val_rows) else None,
            epochs=fine_tune_epochs or max(1, epochs // 3),
            batch_size=min(batch_size, 32),
            seed=seed,
            verbose=verbose,
        )
        fit.extend(history)
        inputs.train_vectors = _pooled(inputs.trunk, train.inputs)
        inputs.test_vectors = _pooled(inputs.trunk, inputs.test.inputs)
    return fit


def _score(model: int, fit: FitResult, inputs: _Inputs, classes: np.ndarray, layer: str | None) -> _Score:
    """The classifier on the test split, and the retrieval embedding (test queries vs the train gallery)."""
    train, test = inputs.train, inputs.test
    gallery = head_embed(fit.head, inputs.train_vectors, layer)
    queries = head_embed(fit.head, inputs.test_vectors, layer)
    if model == SIAMESE_MODEL:
        predicted = nearest_neighbour_labels(queries, gallery, train.labels)
        recall_method = "1-NN of the siamese embedding against the train split"
    else:
        probabilities = predict_in_batches(lambda x: fit.head(x, training=False), inputs.test_vectors, 512)
        predicted = classes[np.argmax(probabilities, axis=1)]
        recall_method = "softmax classifier"
    accuracy, per_class = class_recall(predicted, test.labels)
    return _Score(
        test_accuracy=accuracy,
        per_class_recall=per_class,
        test_map=scan_map(queries, test.labels, gallery, train.labels),
        recall_method=recall_method,
        head_params=head_param_count(model, int(inputs.train_vectors.shape[1]), len(classes)),
        retrieval_width=int(queries.shape[1]),
    )


def _files_write(run: _Run, fit: FitResult, inputs: _Inputs) -> tuple[str, str, int]:
    """Save the head (or the fine-tuned bundle) and its curve; returns (weights name, curve name, base params)."""
    folder = Path(settings.MEDIA_ROOT) / EXTRACTORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if inputs.trunk is None:
        fit.head.save(folder / f"{run.name}.keras")
        base_params = int(run.base.param_count)
    else:
        _bundle(inputs.base_model, fit.head).save(folder / f"{run.name}.keras")
        base_params = int(inputs.base_model.count_params())
    curve = _save_curve(run.name, fit, f"{run.name} on {run.collection.name} ({run.strategy})")
    return f"{EXTRACTORS_DIR}/{run.name}.keras", curve, base_params


def _details(
    run: _Run,
    fit: FitResult,
    score: _Score,
    *,
    classes: np.ndarray,
    layer: str | None,
    options: dict[str, Any],
    counts: dict[str, int],
    subset: str,
    base_map: float,
    curve: str,
) -> dict[str, Any]:
    """Extractor.details of a trained head: how it was trained, on what, and how it scored."""
    return {
        "strategy": run.strategy,
        "collection": run.collection.name,
        "base_extractor": run.base.name,
        "base_weights": run.base.weights,
        "retrieval_layer": layer or f"hidden_{_last_hidden(fit.head)}",
        "classes": [str(c) for c in classes],
        "epochs": fit.phase_epochs,
        **options,
        **counts,
        "subset": subset,
        "test_accuracy": score.test_accuracy,
        "test_map": score.test_map,
        "base_test_map": base_map,
        "per_class_recall": score.per_class_recall,
        "recall_method": score.recall_method,
        "head_params": score.head_params,
        "training_seconds": round(fit.seconds, 2),
        "history": fit.history,
        "curve": curve,
    }


def trained_extractor_save(
    *, name: str, existing: Extractor | None, fields: dict[str, Any], weights_name: str, notes: list[str]
) -> Extractor:
    """Create the Extractor row of a trained head, or replace ``existing`` and delete its now stale vectors.

    Replacing also retires every index version built on ``existing``: they hold the old weights' vectors (perhaps of
    another width), so a new image must not be hashed into them and no search should read them; ``build_index``
    (``setup_demo`` for the demo) builds the next one.
    """
    with transaction.atomic():
        if existing is not None:
            # Its vectors came from the previous weights: drop them so extract_features recomputes them.
            Feature.objects.filter(extractor=existing).delete()
            retired = (
                LSHIndex.objects.filter(extractor=existing)
                .exclude(status=LSHIndex.Status.RETIRED)
                .update(is_active=False, status=LSHIndex.Status.RETIRED, retired_at=timezone.now())
            )
            for key, value in fields.items():
                setattr(existing, key, value)
            existing.weights_file.name = weights_name
            existing.save()
            notes.append(f"replaced {name} and deleted its old vectors")
            if retired:
                notes.append(f"retired the {retired} index version(s) built on its old vectors: run build_index")
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
