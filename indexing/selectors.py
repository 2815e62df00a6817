"""Reads of the indexing app (HackSoft's selectors): feature matrices, result metadata, index lookups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db import connection

from indexing.features.vectors import vector_from_bytes
from indexing.lsh.hashing import HashFamily, family_from_table_params
from indexing.models import Collection, Extractor, Feature, Image, IndexAddition, LSHIndex


@dataclass(frozen=True, eq=False)
class FeatureMatrix:
    """The vectors an index re-ranks against: rows aligned with ``image_ids`` (ascending)."""

    image_ids: np.ndarray  # int64 (n,)
    vectors: np.ndarray  # float32 (n, dim), L2-normalised
    labels: np.ndarray  # str (n,): class label, "" for unlabelled photos
    kinds: np.ndarray | None = None  # str (n,): the kind of each image's collection (Collection.Kind); None: unknown

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers of ``ids``; ids not in the matrix are dropped."""
        positions = np.searchsorted(self.image_ids, ids)
        positions = np.clip(positions, 0, max(len(self.image_ids) - 1, 0))
        found = self.image_ids[positions] == ids if len(self.image_ids) else np.zeros(len(ids), dtype=bool)
        return positions[found]


def features_load(*, extractor: Extractor, collection_ids: list[int], split: str | None = None) -> FeatureMatrix:
    """Load one extractor's vectors for the images of some collections, ordered by image id."""
    queryset = Feature.objects.filter(extractor=extractor, image__collection_id__in=collection_ids)
    if split is not None:
        queryset = queryset.filter(image__split=split)
    rows = list(
        queryset.order_by("image_id").values_list("image_id", "vector", "image__label", "image__collection__kind")
    )
    dim = extractor.output_dim
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    for position, (_, blob, _, _) in enumerate(rows):
        vectors[position] = vector_from_bytes(blob, dim)
    return FeatureMatrix(
        image_ids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
        vectors=vectors,
        labels=np.array([r[2] for r in rows], dtype=str) if rows else np.empty(0, dtype=str),
        kinds=np.array([r[3] for r in rows], dtype=str) if rows else np.empty(0, dtype=str),
    )


@dataclass(frozen=True)
class ImageMeta:
    """What a search result shows of an image, cached with the index so answering needs no extra query."""

    file: str
    label: str
    collection: str
    split: str


def images_meta(image_ids: list[int]) -> dict[int, ImageMeta]:
    """The metadata of a search's hits, by id (an id with no Image row, deleted since, is left out).

    One statement through the connection's cursor: the ORM's queryset compilation cost as much as PostgreSQL's
    answer (0.7 of 1.5 ms for 20 ids at a million images), and a search pays it every time.
    """
    if not image_ids:
        return {}
    image, collection = Image._meta.db_table, Collection._meta.db_table
    sql = (
        f"SELECT i.id, i.file, i.label, c.name, i.split FROM {image} AS i JOIN {collection} AS c "
        f"ON c.id = i.collection_id WHERE i.id IN ({', '.join(['%s'] * len(image_ids))})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [int(i) for i in image_ids])
        rows = cursor.fetchall()
    return {int(pk): ImageMeta(file, label, name, split) for pk, file, label, name, split in rows}


def index_family(index: LSHIndex) -> HashFamily:
    """The hash family of a stored index version, rebuilt from its tables' parameters."""
    tables = [bytes(t.params) for t in index.tables.order_by("number")]
    center = vector_from_bytes(index.center) if index.center is not None else None
    return family_from_table_params(index.family, tables, center=center)


def index_get_active(*, name: str = "default") -> LSHIndex | None:
    return LSHIndex.objects.select_related("extractor").filter(name=name, is_active=True).first()


def index_get_default() -> LSHIndex | None:
    """What a search that names no index searches: the active "default" index, else the newest active one."""
    return (
        index_get_active()
        or LSHIndex.objects.select_related("extractor").filter(is_active=True).order_by("-created_at", "-pk").first()
    )


def additions_read(
    *, index_id: int, extractor: Extractor, after: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:
    """The images added to a version after IndexAddition ``after``: ``(ids, vectors, labels, kinds, last id)``.

    None when there are none (the common case: one probe of the (index, id) B-tree). An image added twice comes
    back once per addition, in order; its Feature row holds its current vector.
    """
    rows = list(
        IndexAddition.objects.filter(index_id=index_id, id__gt=after)
        .order_by("id")
        .values_list("id", "image_id", "image__label", "image__collection__kind")
    )
    if not rows:
        return None
    ids = np.array([r[1] for r in rows], dtype=np.int64)
    found, vectors = features_read(extractor=extractor, image_ids=ids)
    dim = extractor.output_dim
    keep = np.isin(ids, found)  # an image deleted since it was added has no Feature any more
    position = {int(i): p for p, i in enumerate(found.tolist())}
    ordered = np.array([position[int(i)] for i in ids[keep]], dtype=np.int64)
    return (
        ids[keep],
        vectors[ordered] if ordered.size else np.empty((0, dim), dtype=np.float32),
        np.array([r[2] for r, k in zip(rows, keep, strict=True) if k], dtype=str),
        np.array([r[3] for r, k in zip(rows, keep, strict=True) if k], dtype=str),
        int(rows[-1][0]),
    )


def features_read(*, extractor: Extractor, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors of ``image_ids`` (those that have one), as (ids ascending, (m, dim) float32)."""
    rows = list(
        Feature.objects.filter(extractor=extractor, image_id__in=[int(i) for i in np.unique(image_ids)])
        .order_by("image_id")
        .values_list("image_id", "vector")
    )
    vectors = np.empty((len(rows), extractor.output_dim), dtype=np.float32)
    for position, (_, blob) in enumerate(rows):
        vectors[position] = vector_from_bytes(blob, extractor.output_dim)
    return np.array([r[0] for r in rows], dtype=np.int64), vectors


def index_images_now(index: LSHIndex) -> int:
    """Images a version answers with now: those it was built over and those added since.

    An upper bound: an image re-embedded after the build counts again (one indexed COUNT, no scan).
    """
    return int(index.item_count) + IndexAddition.objects.filter(index=index).count()


def index_needs_rebuild(index: LSHIndex, *, growth: float) -> bool:
    """Whether a version has grown ``growth`` times past the collection its L, K and probes were chosen for."""
    return index_images_now(index) >= growth * max(int(index.item_count), 1)


def images_without_features(*, collection: Collection, extractor: Extractor) -> list[int]:
    """Ids of the collection's images that have no vector by ``extractor`` yet, ascending."""
    done = Feature.objects.filter(extractor=extractor, image__collection=collection).values("image_id")
    return list(
        Image.objects.filter(collection=collection).exclude(pk__in=done).order_by("pk").values_list("pk", flat=True)
    )
