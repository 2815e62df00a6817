"""The inputs of an evaluation: rows named on a command line or in a request, and the matrices loaded from them.

``evaluation_data_load`` turns collections (and distractors, splits, query collections) into the arrays the pure
protocol (``evaluation.protocol_maths``) computes on; ``evaluation_inputs_resolve`` looks up names and ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.protocol_maths import EvaluationData, EvaluationError, label_key
from indexing.lsh.scan import as_unit_float32, normalize
from indexing.models import Collection, Extractor, Image, LSHIndex
from indexing.selectors import FeatureMatrix, features_load

QUERY_CHOICES = ("all", "paper")


def evaluation_inputs_resolve(
    *,
    extractor: str | int,
    collections: Sequence[str | int],
    distractors: Sequence[str | int] = (),
    index: int | None = None,
) -> tuple[Extractor, list[Collection], list[Collection], LSHIndex | None]:
    """Look up the rows named on a command line or in an API request (names or ids)."""
    lookup = {"pk": extractor} if isinstance(extractor, int) else {"name": extractor}
    found = Extractor.objects.filter(**lookup).first()
    if found is None:
        known = ", ".join(Extractor.objects.values_list("name", flat=True)) or "none"
        raise EvaluationError(f"unknown extractor {extractor!r} (known: {known})")
    if not collections:
        raise EvaluationError("give at least one collection")
    chosen = collections_resolve(collections)
    chosen_distractors = collections_resolve(distractors)
    overlap = {c.name for c in chosen} & {c.name for c in chosen_distractors}
    if overlap:
        raise EvaluationError(f"collection {', '.join(sorted(overlap))} is both evaluated and a distractor")
    lsh_index = None
    if index is not None:
        lsh_index = LSHIndex.objects.select_related("extractor").filter(pk=index).first()
        if lsh_index is None:
            raise EvaluationError(f"unknown index {index!r}")
        if lsh_index.extractor_id != found.pk:
            raise EvaluationError(
                f"index {index} was built on extractor {lsh_index.extractor.name!r}, not {found.name!r}"
            )
    return found, chosen, chosen_distractors, lsh_index


def collections_resolve(names: Sequence[str | int]) -> list[Collection]:
    result = []
    for name in names:
        lookup = {"pk": name} if isinstance(name, int) else {"name": name}
        collection = Collection.objects.filter(**lookup).first()
        if collection is None:
            known = ", ".join(Collection.objects.values_list("name", flat=True)) or "none"
            raise EvaluationError(f"unknown collection {name!r} (known: {known})")
        result.append(collection)
    return result


def check_queries(queries: str) -> None:
    if queries not in QUERY_CHOICES:
        raise EvaluationError(f"queries must be one of {', '.join(QUERY_CHOICES)}, got {queries!r}")


def evaluation_data_load(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    queries: str = "all",
    gallery_split: str | None = Image.Split.TRAIN,
    query_split: str | None = Image.Split.TEST,
    query_collections: Sequence[Collection] = (),
) -> EvaluationData:
    """Load the features of an evaluation from the database (one query per collection set).

    With ``query_collections`` the queries are every labelled image of those collections and the gallery every
    image of ``collections`` (all splits: what a search over them returns), relevant when the labels name the same
    class (:func:`label_key`: case, spaces, ``-`` and ``_`` aside); ``distractors`` and the splits do not apply.

    ``gallery_split=None`` puts every image of ``collections`` in the gallery; the queries are then gallery
    items and each is removed from its own ranking (the class analysis). ``query_split=None`` queries with
    every labelled image.
    """
    check_queries(queries)
    if query_collections:
        return _cross_collection_data(
            extractor=extractor, gallery=collections, query_collections=query_collections, queries=queries
        )
    main, extra = _gallery_features(extractor, collections, distractors, gallery_split)
    query_ids, query_vectors, query_labels = _query_features(
        extractor, collections, main, gallery_split=gallery_split, query_split=query_split, queries=queries
    )
    gallery_labels = np.concatenate([main.labels, np.full(extra.image_ids.shape[0], "", dtype=main.labels.dtype)])
    gallery_ids = np.concatenate([main.image_ids, extra.image_ids])
    if np.unique(gallery_ids).shape[0] != gallery_ids.shape[0]:
        raise EvaluationError("an image is in both the collections and the distractors")
    self_rows = None
    if gallery_split is None:
        self_rows = np.searchsorted(main.image_ids, query_ids).astype(np.int64)
    labels_list, counts = np.unique(gallery_labels[gallery_labels != ""], return_counts=True)
    per_label = dict(zip(labels_list.tolist(), counts.tolist(), strict=True))
    num_relevant = np.array([per_label.get(label, 0) for label in query_labels.tolist()], dtype=np.int64)
    if self_rows is not None:
        num_relevant -= 1
    answerable = num_relevant > 0
    skipped = int((~answerable).sum())
    if not answerable.any():
        names = ", ".join(c.name for c in collections)
        raise EvaluationError(f"no test query of {names} has a relevant gallery item: check the splits")
    return EvaluationData(
        gallery_ids=gallery_ids,
        gallery_vectors=as_unit_float32(np.concatenate([main.vectors, extra.vectors])),
        gallery_labels=gallery_labels,
        is_distractor=np.concatenate(
            [np.zeros(main.image_ids.shape[0], bool), np.ones(extra.image_ids.shape[0], bool)]
        ),
        query_ids=query_ids[answerable],
        query_vectors=normalize(query_vectors[answerable]),
        query_labels=query_labels[answerable],
        self_rows=self_rows[answerable] if self_rows is not None else None,
        num_relevant=num_relevant[answerable],
        skipped_queries=skipped,
    )


def _gallery_features(
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection],
    gallery_split: str | None,
) -> tuple[FeatureMatrix, FeatureMatrix]:
    """The gallery's features: ``collections`` (of ``gallery_split``) and the distractors (every image)."""
    main = features_load(extractor=extractor, collection_ids=[c.pk for c in collections], split=gallery_split)
    extra = (
        features_load(extractor=extractor, collection_ids=[c.pk for c in distractors])
        if distractors
        else FeatureMatrix(np.empty(0, np.int64), np.empty((0, extractor.output_dim), np.float32), np.empty(0, str))
    )
    if main.image_ids.shape[0] == 0:
        names = ", ".join(c.name for c in collections)
        raise EvaluationError(f"no {extractor.name} features for the gallery of {names}: run extract_features first")
    if distractors and extra.image_ids.shape[0] == 0:
        missing = ", ".join(c.name for c in distractors)
        raise EvaluationError(f"no {extractor.name} features for distractors {missing}: run extract_features first")
    return main, extra


def _query_features(
    extractor: Extractor,
    collections: Sequence[Collection],
    main: FeatureMatrix,
    *,
    gallery_split: str | None,
    query_split: str | None,
    queries: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled queries' ids, vectors and labels (one per class for ``queries="paper"``)."""
    collection_ids = [c.pk for c in collections]
    if gallery_split is None:
        query_source = main
        if query_split is not None:  # the queries are the gallery's images of that split
            split_ids = Image.objects.filter(collection_id__in=collection_ids, split=query_split).values_list("id")
            keep = np.isin(main.image_ids, np.array([row[0] for row in split_ids], dtype=np.int64))
            query_source = FeatureMatrix(main.image_ids[keep], main.vectors[keep], main.labels[keep])
    else:
        query_source = features_load(extractor=extractor, collection_ids=collection_ids, split=query_split)
    labelled = query_source.labels != ""
    query_ids, query_vectors, query_labels = (
        query_source.image_ids[labelled],
        query_source.vectors[labelled],
        query_source.labels[labelled],
    )
    if queries == "paper":  # ids ascend, so the first of each label is the first test image by id
        _, first = np.unique(query_labels, return_index=True)
        first.sort()
        query_ids, query_vectors, query_labels = query_ids[first], query_vectors[first], query_labels[first]
    return query_ids, query_vectors, query_labels


def _cross_collection_data(
    *, extractor: Extractor, gallery: Sequence[Collection], query_collections: Sequence[Collection], queries: str
) -> EvaluationData:
    """Queries from some collections against the whole of others (cross-data-set protocol)."""
    main = features_load(extractor=extractor, collection_ids=[c.pk for c in gallery])
    source = features_load(extractor=extractor, collection_ids=[c.pk for c in query_collections])
    for matrix, names in ((main, gallery), (source, query_collections)):
        if matrix.image_ids.shape[0] == 0:
            listed = ", ".join(c.name for c in names)
            raise EvaluationError(f"no {extractor.name} features for {listed}: run extract_features first")
    if np.intersect1d(main.image_ids, source.image_ids).shape[0]:
        raise EvaluationError("a collection is both queried and searched: give separate collections")
    gallery_labels = np.array([label_key(label) for label in main.labels.tolist()], dtype=str)
    query_labels = np.array([label_key(label) for label in source.labels.tolist()], dtype=str)
    classes, counts = np.unique(gallery_labels[gallery_labels != ""], return_counts=True)
    per_label = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    num_relevant = np.array([per_label.get(label, 0) for label in query_labels.tolist()], dtype=np.int64)
    keep = (query_labels != "") & (num_relevant > 0)
    if queries == "paper":  # one query per class: the first by id
        first = np.zeros_like(keep)
        _, rows = np.unique(np.where(keep, query_labels, ""), return_index=True)
        first[rows] = True
        keep &= first
    if not keep.any():
        raise EvaluationError("no query's class is in the gallery: check the labels of both sides")
    return EvaluationData(
        gallery_ids=main.image_ids,
        gallery_vectors=as_unit_float32(main.vectors),
        gallery_labels=gallery_labels,
        is_distractor=np.zeros(main.image_ids.shape[0], bool),
        query_ids=source.image_ids[keep],
        query_vectors=normalize(source.vectors[keep]),
        query_labels=query_labels[keep],
        self_rows=None,
        num_relevant=num_relevant[keep],
        skipped_queries=int((source.labels != "").sum() - keep.sum()),
    )
