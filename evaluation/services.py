"""The evaluation protocol of the paper (sections 4.3, 5 and 6) over stored features; every run is an EvaluationRun.

Definitions (also in the README's "Evaluation" section):

* **Gallery**: the train-split images of ``collections`` plus every image of ``distractors``. Distractors are
  never relevant (their label counts as ``""``, which no query has). **Queries**: the labelled test-split
  images of ``collections``; ``queries="paper"`` keeps one per class (the first test image by id, so runs
  are deterministic), ``queries="all"`` (default) keeps every one.
* **AP** of a query: the mean, over the R relevant gallery items (same class, the query itself excluded),
  of the precision at each relevant item's rank in the returned ranking; a relevant item the index never
  returned contributes 0. **mAP** is the mean AP over queries. The scan ranks the whole gallery; an LSH
  query ranks only its candidates (the union of its buckets), by exact cosine.
* **precision@10**: relevant items among the first 10 returned / 10. **recall@10**: items of the exact
  scan's top 10 found in the returned top 10 / 10 (1.0 for the scan itself).
* **IE** (improvement in efficiency) = distance computations of the scan (gallery size per query) /
  distance computations of LSH (distinct candidates, each counted once), summed over queries (a ratio of
  sums). **IE (paper)** counts a candidate once per table it was found in, as the paper's tables do
  (which is why the paper reports IE < 1 for L=5, K=1).
* **p50 latency**: median wall time of one query through the pure core (``ExactIndex`` /
  ``LshIndex.query`` with an in-memory bucket store; for a stored index, ``OrmBucketStore``: one SQL query)
  over up to ``LATENCY_QUERIES`` queries after one warm-up; the vector is given, so no CNN time.
* **Distractor share @k**: photos among all returned top-k items of all queries (the paper expects none).

How an LSH configuration is evaluated (fast enough for a sweep): the scan ranking of every query is
computed once (one matrix product and one sort); a configuration hashes the gallery and the queries with
the same family code the index uses (``make_family`` / ``index_family(index)``), marks each query's
candidates (items sharing a bucket in any table, plus the multi-probe buckets), and the LSH ranking is the
scan ranking restricted to the candidates, which is what ``LshIndex.query``'s exact re-rank returns (ties
by gallery row in both). A stored index is thus evaluated from keys rebuilt in memory from its stored
table parameters (identical to its BucketEntry keys); only its latency goes through the stored rows.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from evaluation import metrics
from evaluation.models import EvaluationRun
from indexing.lsh.hashing import fit_center, make_family
from indexing.lsh.index import ExactIndex, LshIndex
from indexing.lsh.scan import as_unit_float32, normalize
from indexing.lsh.stats import bucket_stats
from indexing.models import Collection, Extractor, Image, LSHIndex
from indexing.selectors import FeatureMatrix, features_load, index_family
from indexing.stores import OrmBucketStore

T = TypeVar("T")
Progress = Callable[[Iterable[T], str, int], Iterable[T]]

TOP_K = 10
DISTRACTOR_KS = (10, 50)
LATENCY_QUERIES = 100
QUERY_BLOCK = 256  # queries scored per matrix product: bounds the (block, gallery) temporaries
QUERY_CHOICES = ("all", "paper")
FAMILIES = ("real", "binary")
RECALL_UNAVAILABLE = "classifier recall unavailable: no fine-tuned model"

# The columns of the paper's section-5 tables, in its order, then ours.
PAPER_COLUMNS = (
    "mAP",
    "IE",
    "avg bucket purity",
    "std bucket purity",
    "number of buckets",
    "number of items",
    "avg items per bucket",
    "std items per bucket",
)
SWEEP_COLUMNS = ("family", "L", "K", "probes", *PAPER_COLUMNS, "IE (paper)", "recall@10", "p50 latency ms")


class EvaluationError(ValueError):
    """Bad input to an evaluation (unknown name, no features, nothing to query); the message names the value."""


def _no_progress(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    return items


# ---------------------------------------------------------------------------------------------------------------
# Inputs


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


@dataclass(frozen=True, eq=False)
class EvaluationData:
    """Gallery and queries of one evaluation, as arrays aligned by row."""

    gallery_ids: np.ndarray  # (n,) int64 Image ids, ascending within each part
    gallery_vectors: np.ndarray  # (n, dim) float32, unit rows
    gallery_labels: np.ndarray  # (n,) str; "" for distractors (never relevant)
    is_distractor: np.ndarray  # (n,) bool
    query_ids: np.ndarray  # (q,) int64
    query_vectors: np.ndarray  # (q, dim) float32, unit rows
    query_labels: np.ndarray  # (q,) str, never ""
    self_rows: np.ndarray | None  # (q,) the query's own gallery row when it is in the gallery, else None
    num_relevant: np.ndarray  # (q,) int64 R per query
    skipped_queries: int  # labelled queries dropped because their class has no other gallery item

    @property
    def scan_cost(self) -> int:
        """Distance computations of one scan query (the query's own row is not compared)."""
        return int(self.gallery_ids.shape[0]) - (1 if self.self_rows is not None else 0)


def _check_queries(queries: str) -> None:
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
    _check_queries(queries)
    if query_collections:
        return _cross_collection_data(
            extractor=extractor, gallery=collections, query_collections=query_collections, queries=queries
        )
    collection_ids = [c.pk for c in collections]
    main = features_load(extractor=extractor, collection_ids=collection_ids, split=gallery_split)
    extra = (
        features_load(extractor=extractor, collection_ids=[c.pk for c in distractors])
        if distractors
        else FeatureMatrix(np.empty(0, np.int64), np.empty((0, extractor.output_dim), np.float32), np.empty(0, str))
    )
    names = ", ".join(c.name for c in collections)
    if main.image_ids.shape[0] == 0:
        raise EvaluationError(f"no {extractor.name} features for the gallery of {names}: run extract_features first")
    if distractors and extra.image_ids.shape[0] == 0:
        missing = ", ".join(c.name for c in distractors)
        raise EvaluationError(f"no {extractor.name} features for distractors {missing}: run extract_features first")
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


def label_key(label: str) -> str:
    """The class a label names across data sets: "wine-bottle", "wine_bottle", "Wine bottle" are one class."""
    return "".join(ch for ch in label.lower() if ch not in " _-")


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


# ---------------------------------------------------------------------------------------------------------------
# The computation (NumPy over the in-memory matrices)


@dataclass(frozen=True, eq=False)
class ScanRanking:
    """Every query's exact ranking of the gallery, best first, the query itself removed."""

    order: np.ndarray  # (q, depth) int32 gallery rows; ties by ascending row
    relevant: np.ndarray  # (q, depth) bool: the ranked item is relevant to the query
    seconds: float


def scan_rank(data: EvaluationData) -> ScanRanking:
    """Exact cosine ranking of the whole gallery for every query: one matrix product and one sort per block."""
    started = time.perf_counter()
    num_queries = data.query_ids.shape[0]
    depth = data.scan_cost
    order = np.empty((num_queries, depth), dtype=np.int32)
    for start in range(0, num_queries, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, num_queries)
        scores = data.query_vectors[start:stop] @ data.gallery_vectors.T
        if data.self_rows is not None:
            # -inf sorts the query's own row last, so dropping the last column removes it.
            scores[np.arange(stop - start), data.self_rows[start:stop]] = -np.inf
        block = np.argsort(-scores, axis=1, kind="stable")  # stable: ties by ascending row, as cosine_top_k
        order[start:stop] = block[:, :depth]
    relevant = data.gallery_labels[order] == data.query_labels[:, np.newaxis]
    relevant &= data.gallery_labels[order] != ""
    return ScanRanking(order=order, relevant=relevant, seconds=time.perf_counter() - started)


@dataclass(frozen=True, eq=False)
class Outcome:
    """What one method (scan or one LSH configuration) returned for every query."""

    ap_values: np.ndarray  # (q,) float64
    relevance: np.ndarray  # (q, depth) bool, in the method's returned order (padded with False)
    top_rows: np.ndarray  # (q, max(DISTRACTOR_KS)) int64 gallery rows returned, best first, padded with -1
    candidates: int  # distance computations summed over queries, each candidate once
    candidates_with_repeats: int  # the paper's count: once per table it was found in


def scan_outcome(data: EvaluationData, ranking: ScanRanking) -> Outcome:
    ap_values = metrics.average_precision_from_ranking(ranking.relevant, data.num_relevant)
    depth = max(DISTRACTOR_KS)
    top = np.full((ranking.order.shape[0], depth), -1, dtype=np.int64)
    top[:, : min(depth, ranking.order.shape[1])] = ranking.order[:, :depth]
    cost = data.scan_cost * data.query_ids.shape[0]
    return Outcome(ap_values, ranking.relevant, top, cost, cost)


def _query_keys(family: Any, vectors: np.ndarray, probes: int) -> np.ndarray:
    """(q, num_tables, 1 + probes) bucket keys to look up per query, home bucket first."""
    if probes == 0:
        keys: np.ndarray = family.keys(vectors)[:, :, np.newaxis]
        return keys
    return np.stack([family.probe_keys(vector, probes) for vector in vectors])


def lsh_outcome(
    data: EvaluationData, ranking: ScanRanking, family: Any, gallery_keys: np.ndarray, *, probes: int = 0
) -> Outcome:
    """Evaluate one LSH configuration: candidates from the buckets, ranked as ``LshIndex.query`` re-ranks them.

    ``gallery_keys`` is ``family.keys(data.gallery_vectors)`` (``(n, num_tables)``), computed once per family
    and shared by every probe setting.
    """
    num_queries = data.query_ids.shape[0]
    size = data.gallery_ids.shape[0]
    query_keys = _query_keys(family, data.query_vectors, probes)
    candidate = np.zeros((num_queries, size), dtype=bool)
    repeats = 0
    for start in range(0, num_queries, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, num_queries)
        block = candidate[start:stop]
        for table in range(gallery_keys.shape[1]):
            # (b, probes, n) -> (b, n): the item is in one of the probed buckets of this table.
            hit = (query_keys[start:stop, table, :, np.newaxis] == gallery_keys[np.newaxis, np.newaxis, :, table]).any(
                axis=1
            )
            if data.self_rows is not None:
                hit[np.arange(stop - start), data.self_rows[start:stop]] = False
            repeats += int(hit.sum())
            block |= hit
    # The LSH ranking is the scan ranking restricted to the candidates: compact each row in place.
    found = np.take_along_axis(candidate, ranking.order.astype(np.intp), axis=1)  # (q, depth) in scan order
    position = np.cumsum(found, axis=1) - 1  # rank among the candidates
    relevance = np.zeros_like(found)
    rows, cols = np.nonzero(found & ranking.relevant)
    relevance[rows, position[rows, cols]] = True
    depth = max(DISTRACTOR_KS)
    top = np.full((num_queries, depth), -1, dtype=np.int64)
    rows, cols = np.nonzero(found & (position < depth))
    top[rows, position[rows, cols]] = ranking.order[rows, cols]
    ap_values = metrics.average_precision_from_ranking(relevance, data.num_relevant)
    return Outcome(ap_values, relevance, top, int(candidate.sum()), repeats)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON (and PostgreSQL jsonb) has no infinity


def outcome_summary(data: EvaluationData, ranking: ScanRanking, outcome: Outcome) -> dict[str, Any]:
    """The headline numbers of one method: mAP, p@10, recall@10, both IEs and the distractor shares."""
    num_queries = data.query_ids.shape[0]
    k = min(TOP_K, ranking.order.shape[1])
    total = data.scan_cost * num_queries
    summary: dict[str, Any] = {
        "mAP": float(outcome.ap_values.mean()),
        "p@10": metrics.precision_at_k(outcome.relevance, k),
        "hit@1": metrics.precision_at_k(outcome.relevance, 1),
        "recall@10": metrics.recall_at_k(outcome.top_rows[:, :k], ranking.order[:, :k], k),
        "IE": _finite(metrics.improvement_in_efficiency(total, outcome.candidates)),
        "IE (paper)": _finite(metrics.improvement_in_efficiency_paper(total, outcome.candidates_with_repeats)),
        "avg candidates": outcome.candidates / num_queries,
    }
    if data.is_distractor.any():
        for depth in DISTRACTOR_KS:
            top = outcome.top_rows[:, :depth]
            flags = data.is_distractor[top[top >= 0]]
            summary[f"distractor share@{depth}"] = metrics.distractor_share(flags, flags.size) if flags.size else 0.0
    return summary


def _latency_sample(data: EvaluationData, count: int) -> list[np.ndarray]:
    num_queries = data.query_ids.shape[0]
    picks = np.unique(np.linspace(0, num_queries - 1, num=min(count, num_queries)).round().astype(np.int64))
    return [data.query_vectors[i] for i in picks]


def scan_latency_ms(data: EvaluationData, *, count: int = LATENCY_QUERIES) -> float:
    index = ExactIndex().fit(data.gallery_vectors, data.gallery_ids)
    times = metrics.time_queries(lambda vector: index.query(vector, TOP_K), _latency_sample(data, count))
    return metrics.percentile_ms(times, 50)


def lsh_latency_ms(
    data: EvaluationData, family: Any, *, probes: int, store: Any = None, count: int = LATENCY_QUERIES
) -> float:
    """p50 of ``LshIndex.query`` (in-memory buckets, or ``store``'s stored buckets when given)."""
    index = LshIndex(family, store=store).fit(data.gallery_vectors, data.gallery_ids, add_to_store=store is None)
    times = metrics.time_queries(lambda vector: index.query(vector, TOP_K, probes), _latency_sample(data, count))
    return metrics.percentile_ms(times, 50)


def _gallery_summary(data: EvaluationData) -> dict[str, Any]:
    return {
        "gallery size": int(data.gallery_ids.shape[0]),
        "distractors": int(data.is_distractor.sum()),
        "queries": int(data.query_ids.shape[0]),
        "classes": int(np.unique(data.query_labels).shape[0]),
        "skipped queries": data.skipped_queries,
        "avg relevant per query": float(data.num_relevant.mean()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Runs


def _names(collections: Sequence[Collection]) -> list[str]:
    return [c.name for c in collections]


def _save_file(run: EvaluationRun, name: str, content: bytes) -> str:
    return default_storage.save(f"evaluations/{run.pk}/{name}", ContentFile(content))


@transaction.atomic
def _run_create(**fields: Any) -> EvaluationRun:
    return EvaluationRun.objects.create(**fields)


def evaluation_run(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    index: LSHIndex | None = None,
    scan: bool = True,
    queries: str = "all",
    probes: int | None = None,
    latency_queries: int = LATENCY_QUERIES,
    query_collections: Sequence[Collection] = (),
) -> EvaluationRun:
    """Evaluate the sequential scan (``index=None``) or a stored LSH index over the paper's protocol.

    With an index, the scan is evaluated too (it is the recall@10 reference) and reported under ``"scan"``;
    ``probes=None`` probes as the index does by default (its tuned probes). ``query_collections``: the queries come
    from those collections and the gallery is the whole of ``collections`` (see :func:`evaluation_data_load`).
    """
    if probes is None:
        probes = index.probes if index is not None else 0
    if index is None and not scan:
        raise EvaluationError("give an index or scan=True")
    if probes < 0:
        raise EvaluationError(f"probes must be >= 0, got {probes}")
    if index is not None and index.extractor_id != extractor.pk:
        raise EvaluationError(f"index {index.pk} was built on another extractor than {extractor.name!r}")
    data = evaluation_data_load(
        extractor=extractor,
        collections=collections,
        distractors=distractors,
        queries=queries,
        query_collections=query_collections,
    )
    ranking = scan_rank(data)
    scan_results = outcome_summary(data, ranking, scan_outcome(data, ranking))
    scan_results["p50 latency ms"] = scan_latency_ms(data, count=latency_queries)
    parameters: dict[str, Any] = {
        "collections": _names(collections),
        "distractors": _names(distractors),
        "query_collections": _names(query_collections),
        "queries": queries,
        "method": "scan" if index is None else "lsh",
        "probes": probes,
    }
    if index is None:
        results = {**scan_results, **_gallery_summary(data)}
    else:
        family = index_family(index)
        gallery_keys = family.keys(data.gallery_vectors)  # type: ignore[attr-defined]
        outcome = lsh_outcome(data, ranking, family, gallery_keys, probes=probes)
        results = outcome_summary(data, ranking, outcome)
        store = OrmBucketStore(list(index.tables.order_by("number").values_list("id", flat=True)))
        results["p50 latency ms"] = lsh_latency_ms(data, family, probes=probes, store=store, count=latency_queries)
        stats = bucket_stats(gallery_keys, data.gallery_labels)
        results.update(_stats_columns(stats))
        results["scan"] = scan_results
        results.update(_gallery_summary(data))
        parameters.update(index=index.pk, family=index.family, L=index.num_tables, K=index.hashes_per_table, w=index.w)
    return _run_create(
        kind=EvaluationRun.Kind.EVALUATE, extractor=extractor, index=index, parameters=parameters, results=results
    )


def _stats_columns(stats: Any) -> dict[str, Any]:
    return {
        "avg bucket purity": stats.avg_purity,
        "std bucket purity": stats.std_purity,
        "number of buckets": stats.num_buckets,
        "number of items": stats.num_items,
        "avg items per bucket": stats.avg_items_per_bucket,
        "std items per bucket": stats.std_items_per_bucket,
    }


def lsh_sweep(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    family: str | Sequence[str] = "binary",
    grid: Sequence[tuple[int, int]],
    probes: Sequence[int] = (0,),
    w: float = 4.0,
    center: bool = False,
    seed: int = 0,
    queries: str = "all",
    latency_queries: int = LATENCY_QUERIES,
    progress: Progress[Any] | None = None,
) -> EvaluationRun:
    """The paper's section-5 tables: one row per (family, L, K, probes), each index built in memory.

    Rows hold exactly the paper's columns (``PAPER_COLUMNS``) plus ``IE (paper)``, recall@10, probes and the
    p50 latency of ``LshIndex.query`` on an in-memory store. Saves the rows as CSV and Markdown and a mAP-vs-IE
    plot (scan mAP as a horizontal line) under ``MEDIA_ROOT/evaluations/<id>/``.
    """
    families = [family] if isinstance(family, str) else list(dict.fromkeys(family))
    for name in families:
        if name not in FAMILIES:
            raise EvaluationError(f"unknown family {name!r}: use real or binary")
    if not grid:
        raise EvaluationError("the grid is empty")
    for num_tables, hashes in grid:
        if num_tables < 1 or hashes < 1:
            raise EvaluationError(f"bad grid point L={num_tables} K={hashes}: both must be >= 1")
        if "binary" in families and hashes > 63:
            raise EvaluationError(f"bad grid point L={num_tables} K={hashes}: SimHash needs K <= 63")
    probe_list = list(dict.fromkeys(probes)) or [0]
    if min(probe_list) < 0:
        raise EvaluationError(f"probes must be >= 0, got {min(probe_list)}")
    if w <= 0:
        raise EvaluationError(f"w must be > 0, got {w}")
    report = progress or _no_progress
    started = time.perf_counter()
    data = evaluation_data_load(extractor=extractor, collections=collections, distractors=distractors, queries=queries)
    ranking = scan_rank(data)
    scan_results = outcome_summary(data, ranking, scan_outcome(data, ranking))
    scan_results["p50 latency ms"] = scan_latency_ms(data, count=latency_queries)
    mean = fit_center(data.gallery_vectors) if center else None
    configurations = [(name, num_tables, hashes) for name in families for num_tables, hashes in grid]
    rows: list[dict[str, Any]] = []
    for name, num_tables, hashes in report(configurations, "configurations", len(configurations)):
        hasher = make_family(
            name, data.gallery_vectors.shape[1], num_tables=num_tables, hashes_per_table=hashes, w=w, seed=seed,
            center=mean,
        )  # fmt: skip
        gallery_keys = hasher.keys(data.gallery_vectors)
        stats = _stats_columns(bucket_stats(gallery_keys, data.gallery_labels))
        for probe in probe_list:
            effective = min(probe, hasher.max_probes)
            if effective != probe and effective in probe_list:
                continue  # K too small for that many probes: the row would repeat the smaller setting
            summary = outcome_summary(data, ranking, lsh_outcome(data, ranking, hasher, gallery_keys, probes=effective))
            rows.append(
                {
                    "family": name,
                    "L": num_tables,
                    "K": hashes,
                    "probes": effective,
                    "mAP": summary["mAP"],
                    "IE": summary["IE"],
                    **stats,
                    "IE (paper)": summary["IE (paper)"],
                    "recall@10": summary["recall@10"],
                    "p50 latency ms": lsh_latency_ms(data, hasher, probes=effective, count=latency_queries),
                    "p@10": summary["p@10"],
                    **{key: value for key, value in summary.items() if key.startswith("distractor share")},
                }
            )
    results = {
        "rows": rows,
        "columns": list(SWEEP_COLUMNS),
        "scan": scan_results,
        "mAP": scan_results["mAP"],
        "seconds": time.perf_counter() - started,
        **_gallery_summary(data),
    }
    parameters = {
        "collections": _names(collections),
        "distractors": _names(distractors),
        "families": families,
        "grid": [list(pair) for pair in grid],
        "probes": probe_list,
        "w": w,
        "center": center,
        "seed": seed,
        "queries": queries,
    }
    run = _run_create(kind=EvaluationRun.Kind.SWEEP, extractor=extractor, parameters=parameters, results=results)
    files = {
        "csv": _save_file(run, "sweep.csv", sweep_csv(rows).encode()),
        "markdown": _save_file(run, "sweep.md", sweep_markdown(rows, scan=scan_results).encode()),
    }
    run.figures = [_save_file(run, "sweep.png", sweep_plot_png(rows, scan_map=scan_results["mAP"]))]
    run.results = {**results, "files": files}
    run.save(update_fields=["figures", "results"])
    return run


def class_analysis(
    *,
    extractor: Extractor,
    collections: Sequence[Collection],
    distractors: Sequence[Collection] = (),
    index: LSHIndex | None = None,
    query_split: str | None = Image.Split.TEST,
) -> EvaluationRun:
    """The paper's Algorithm 1: per class, each query sketch against the rest of the gallery.

    The gallery is every image of ``collections`` (train and test) plus the distractors; each query is removed
    from its own ranking (R = class size - 1). ``query_split="test"`` queries with the test sketches,
    ``None`` with every sketch (the paper's exact protocol). Sequential scan unless ``index`` is given.
    Per class: mAP, min/max AP, range, std, best and worst query; with the classifier's per-class recall in
    ``extractor.details["per_class_recall"]`` (``{class name: recall in [0, 1]}``), Pearson(recall, mAP).
    """
    if index is not None and index.extractor_id != extractor.pk:
        raise EvaluationError(f"index {index.pk} was built on another extractor than {extractor.name!r}")
    data = evaluation_data_load(
        extractor=extractor,
        collections=collections,
        distractors=distractors,
        gallery_split=None,
        query_split=query_split,
    )
    ranking = scan_rank(data)
    if index is None:
        outcome = scan_outcome(data, ranking)
    else:
        family = index_family(index)
        outcome = lsh_outcome(data, ranking, family, family.keys(data.gallery_vectors))  # type: ignore[attr-defined]
    class_names = np.unique(data.query_labels)
    codes = np.searchsorted(class_names, data.query_labels)
    summaries = metrics.per_class_ap(outcome.ap_values, codes, data.query_ids)
    names = dict(enumerate(class_names.tolist()))
    per_class = [metrics.class_summary_to_dict(s, names) | {"queries": s.num_queries} for s in summaries]
    results: dict[str, Any] = {
        **outcome_summary(data, ranking, outcome),
        "method": "scan" if index is None else "lsh",
        **_gallery_summary(data),
    }
    recall = _per_class_recall(extractor)
    if recall is None:
        results["classifier recall"] = RECALL_UNAVAILABLE
    else:
        paired = [(recall[row["class"]], row["mAP"]) for row in per_class if row["class"] in recall]
        for row in per_class:
            row["recall"] = recall.get(row["class"])
        if len(paired) >= 2:
            xs, ys = zip(*paired, strict=True)
            try:
                results["pearson recall vs mAP"] = metrics.pearson_correlation(xs, ys)
            except ValueError as exc:
                results["pearson recall vs mAP"] = None
                results["classifier recall"] = f"correlation undefined: {exc}"
        else:
            results["classifier recall"] = "classifier recall covers fewer than 2 evaluated classes"
    parameters = {
        "collections": _names(collections),
        "distractors": _names(distractors),
        "query_split": query_split or "all",
        "method": results["method"],
    }
    run = _run_create(
        kind=EvaluationRun.Kind.CLASS_ANALYSIS,
        extractor=extractor,
        index=index,
        parameters=parameters,
        results=results,
        per_class=per_class,
    )
    figures = [_save_file(run, "class_map.png", class_map_plot_png(per_class))]
    if recall is not None and "pearson recall vs mAP" in results:
        figures.append(_save_file(run, "recall_vs_map.png", recall_scatter_png(per_class, results)))
    run.figures = figures
    run.save(update_fields=["figures"])
    return run


def _per_class_recall(extractor: Extractor) -> dict[str, float] | None:
    value = (extractor.details or {}).get("per_class_recall")
    if not isinstance(value, Mapping) or not value:
        return None
    return {str(name): float(recall) for name, recall in value.items()}


# ---------------------------------------------------------------------------------------------------------------
# Queueing (the API and the dashboard) and the task's entry point


RUN_KINDS = (EvaluationRun.Kind.EVALUATE, EvaluationRun.Kind.SWEEP, EvaluationRun.Kind.CLASS_ANALYSIS)


def evaluation_execute(*, kind: str, parameters: Mapping[str, Any]) -> EvaluationRun:
    """Run one evaluation from JSON parameters (names, not rows): what the Celery task calls."""
    extractor, collections, distractors, index = evaluation_inputs_resolve(
        extractor=parameters["extractor"],
        collections=parameters.get("collections", []),
        distractors=parameters.get("distractors", []),
        index=parameters.get("index"),
    )
    if kind == EvaluationRun.Kind.EVALUATE:
        return evaluation_run(
            extractor=extractor,
            collections=collections,
            distractors=distractors,
            index=index,
            queries=parameters.get("queries", "all"),
            probes=int(parameters.get("probes", 0)),
        )
    if kind == EvaluationRun.Kind.SWEEP:
        from evaluation.grid import parse_grid

        grid = parameters.get("grid", "")
        return lsh_sweep(
            extractor=extractor,
            collections=collections,
            distractors=distractors,
            family=parameters.get("families", ["binary"]),
            grid=parse_grid(grid) if isinstance(grid, str) else [tuple(pair) for pair in grid],
            probes=[int(p) for p in parameters.get("probe_list", [0])],
            w=float(parameters.get("w", 4.0)),
            center=bool(parameters.get("center", False)),
            queries=parameters.get("queries", "all"),
        )
    if kind == EvaluationRun.Kind.CLASS_ANALYSIS:
        return class_analysis(extractor=extractor, collections=collections, distractors=distractors, index=index)
    raise EvaluationError(f"unknown evaluation kind {kind!r}: use {', '.join(RUN_KINDS)}")


def evaluation_queue(*, kind: str, parameters: dict[str, Any]) -> Any:
    """Check the names now (so a typo is a 400, not a failed job), then queue the run as a Job on Celery."""
    from evaluation.tasks import evaluation_run_task
    from indexing.models import Job
    from indexing.services.jobs import job_create, job_enqueue

    if kind not in RUN_KINDS:
        raise EvaluationError(f"unknown evaluation kind {kind!r}: use {', '.join(RUN_KINDS)}")
    evaluation_inputs_resolve(
        extractor=parameters["extractor"],
        collections=parameters.get("collections", []),
        distractors=parameters.get("distractors", []),
        index=parameters.get("index"),
    )
    job = job_create(kind=Job.Kind.EVALUATE, parameters={"kind": kind, **parameters})
    return job_enqueue(job=job, task=evaluation_run_task, kind=kind, parameters=parameters)


# ---------------------------------------------------------------------------------------------------------------
# Tables and figures


def format_value(value: Any) -> str:
    if value is None:
        return "inf"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        if abs(value) >= 10:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def sweep_markdown(rows: Sequence[Mapping[str, Any]], *, scan: Mapping[str, Any] | None = None) -> str:
    text = markdown_table(rows, SWEEP_COLUMNS)
    if scan is not None:
        text += (
            f"\n\nsequential scan: mAP {scan['mAP']:.3f}, p@10 {scan['p@10']:.3f}, "
            f"p50 latency {scan['p50 latency ms']:.2f} ms\n"
        )
    return text


def sweep_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _figure() -> Any:
    from matplotlib.figure import Figure  # the object API: no pyplot global state, safe in threads and workers

    return Figure(figsize=(7, 4.5), dpi=110)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def sweep_plot_png(rows: Sequence[Mapping[str, Any]], *, scan_map: float) -> bytes:
    """mAP against IE (log scale), one series per (family, probes), the scan's mAP as a horizontal line."""
    figure = _figure()
    axes = figure.add_subplot()
    series: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        series.setdefault((row["family"], row["probes"]), []).append(row)
    markers = {"real": "o", "binary": "s"}
    for (name, probe), points in series.items():
        finite = [p for p in points if p["IE"] is not None]
        label = f"{name} LSH" + (f", {probe} probes" if probe else "")
        axes.scatter([p["IE"] for p in finite], [p["mAP"] for p in finite], marker=markers[name], label=label)
        for point in finite:
            axes.annotate(
                f"L{point['L']}K{point['K']}", (point["IE"], point["mAP"]), fontsize=7, xytext=(3, 3),
                textcoords="offset points",
            )  # fmt: skip
    axes.axhline(scan_map, color="grey", linestyle="--", label=f"sequential scan (mAP {scan_map:.3f})")
    axes.set_xscale("log")
    axes.set_xlabel("IE (scan distance computations / distinct LSH candidates)")
    axes.set_ylabel("mAP")
    axes.set_title("LSH parameter sweep: accuracy against efficiency")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def class_map_plot_png(per_class: Sequence[Mapping[str, Any]]) -> bytes:
    figure = _figure()
    figure.set_size_inches(max(7.0, 0.18 * len(per_class)), 4.5)
    axes = figure.add_subplot()
    rows = sorted(per_class, key=lambda row: row["mAP"], reverse=True)
    axes.bar(range(len(rows)), [row["mAP"] for row in rows])
    axes.set_xticks(range(len(rows)), [row["class"] for row in rows], rotation=90, fontsize=6)
    axes.set_ylabel("class mAP")
    axes.set_title("mAP by class (Algorithm 1)")
    return _png(figure)


def recall_scatter_png(per_class: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> bytes:
    figure = _figure()
    axes = figure.add_subplot()
    points = [row for row in per_class if row.get("recall") is not None]
    axes.scatter([row["recall"] for row in points], [row["mAP"] for row in points])
    for row in points:
        axes.annotate(row["class"], (row["recall"], row["mAP"]), fontsize=6)
    correlation = results.get("pearson recall vs mAP")
    axes.set_xlabel("classifier recall")
    axes.set_ylabel("class mAP")
    axes.set_title("Recall and mAP by class" + (f" (Pearson r = {correlation:.2f})" if correlation is not None else ""))
    return _png(figure)


def run_headline(run: EvaluationRun) -> float | None:
    """The one mAP that sums a run up: the method's, or the scan's for a sweep."""
    value = (run.results or {}).get("mAP")
    return float(value) if isinstance(value, int | float) else None
