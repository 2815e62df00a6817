"""The labelled data a head trains on: a collection's train or test split, per class limited, as stored base
vectors (head-only training) or as preprocessed images (fine-tuning)."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from indexing.features.pipeline import ImageKind, prepare_image
from indexing.models import Collection, Extractor, Image
from indexing.selectors import features_load


@dataclass
class Split:
    """The labelled rows of one split."""

    image_ids: np.ndarray  # (n,) int64
    inputs: np.ndarray  # (n, dim) base vectors, or (n, ...) cut activations / images for fine-tuning
    labels: np.ndarray  # (n,) str


def limit_per_class(ids: np.ndarray, labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Rows to keep: the first ``per_class`` of each label by image id (all when None)."""
    if per_class is None:
        return np.arange(len(ids))
    keep = np.concatenate([np.flatnonzero(labels == label)[:per_class] for label in np.unique(labels)])
    return np.sort(keep)


def features_split(*, base: Extractor, collection: Collection, split: str, per_class: int | None) -> Split:
    """The stored ``base`` vectors of the labelled images of one split."""
    matrix = features_load(extractor=base, collection_ids=[collection.pk], split=split)
    labelled = matrix.labels != ""
    ids, vectors, labels = matrix.image_ids[labelled], matrix.vectors[labelled], matrix.labels[labelled]
    keep = limit_per_class(ids, labels, per_class)
    return Split(ids[keep], vectors[keep], labels[keep])


def images_split(*, collection: Collection, split: str, per_class: int | None, size: int, kind: ImageKind) -> Split:
    """The labelled images of one split, decoded and preprocessed to ``size`` exactly as extraction does."""
    rows = list(
        Image.objects.filter(collection=collection, split=split)
        .exclude(label="")
        .order_by("pk")
        .values_list("pk", "file", "label")
    )
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    labels = np.array([r[2] for r in rows], dtype=str) if rows else np.empty(0, str)
    keep = limit_per_class(ids, labels, per_class)
    return Split(ids[keep], _prepared_images([rows[i][1] for i in keep], size, kind), labels[keep])


def _prepared_images(files: list[str], size: int, kind: ImageKind) -> np.ndarray:
    """Decode and preprocess image files, in a small thread pool."""
    from django.core.files.storage import default_storage

    prepare = functools.partial(prepare_image, size=size, kind=kind)
    with ThreadPoolExecutor(max_workers=2) as pool:
        arrays = list(pool.map(lambda name: prepare(default_storage.path(name)), files))
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
