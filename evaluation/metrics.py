"""Retrieval and efficiency metrics: pure NumPy, no Django (STYLE.md G2, G9).

One concept in one file (over 600 lines on purpose): the metric definitions the README's "Evaluation" section
and the paper use (AP/mAP, precision and recall at k, IE both ways, bucket purity, per-class AP and Pearson,
distractor share, query latency), sharing the conventions below and the argument checks; nearly half of the
length is their docstrings. Callers read one module to know what every reported number means.

Conventions used throughout:

* A *ranking* is the ordered list of items returned for one query, best first, with the query itself
  already removed (``relevance_from_ids`` does that removal for id matrices).
* ``num_relevant`` (R) is always the number of relevant items in the *collection* (same class as the
  query, the query excluded), never the number found in the ranking: a relevant item the index did
  not return contributes 0 to the average precision.
* Matrices hold one query per row; shorter rankings are padded at the end (``False`` in a relevance
  matrix, a label no query has in a label matrix, ``-1`` in an id matrix).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "ClassSummary",
    "average_bucket_purity",
    "average_precision",
    "average_precision_from_ranking",
    "bucket_purity",
    "class_summary_to_dict",
    "distractor_share",
    "improvement_in_efficiency",
    "improvement_in_efficiency_paper",
    "mean_average_precision",
    "pearson_correlation",
    "per_class_ap",
    "percentile_ms",
    "precision_at_k",
    "ranking_ap",
    "recall_at_k",
    "relevance_from_ids",
    "time_queries",
]

QueryT = TypeVar("QueryT")

# Padding for id matrices: never a valid row index into the collection.
PAD_ID = -1


def _as_2d(array: npt.ArrayLike, name: str) -> tuple[np.ndarray[Any, Any], bool]:
    """Return ``array`` as a 2-D array and whether it was 1-D (one query)."""
    arr = np.asarray(array)
    if arr.ndim == 1:
        return arr[np.newaxis, :], True
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D (one query) or 2-D (num_queries, depth), got shape {arr.shape}")
    return arr, False


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def average_precision_from_ranking(
    ranked: npt.ArrayLike,
    num_relevant: int | npt.ArrayLike,
    *,
    query_labels: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Average precision of many queries at once, vectorised over queries and ranks.

    AP = (1 / R) * sum over the relevant items found of (precision at that item's rank); relevant
    items the ranking lacks contribute 0. Memory and time are O(size of ``ranked``) with no Python
    loop over items, so full rankings of the whole collection for hundreds of queries are cheap.

    Args:
        ranked: ``(num_queries, depth)`` (or ``(depth,)`` for one query). Either a boolean relevance
            matrix (``True`` = same class as the query), or, when ``query_labels`` is given, the class
            labels of the ranked items (e.g. ``item_labels[ranked_ids]``). Pad short rankings at the end
            with ``False`` or with a label no query has. The query itself must not be in its row.
        num_relevant: R, the number of relevant items in the collection: an int for every query or a
            ``(num_queries,)`` array. Must be >= 1 and >= the relevant items present in the row.
        query_labels: ``(num_queries,)`` class label of each query; ``None`` means ``ranked`` is already
            a relevance matrix.

    Returns:
        ``(num_queries,)`` float64 array of AP values in [0, 1].

    Raises:
        ValueError: On bad shapes, a non-boolean relevance matrix, R < 1, or a row with more relevant
            items than R.

    """
    matrix, _ = _as_2d(ranked, "ranked")
    num_queries = matrix.shape[0]
    if query_labels is None:
        if matrix.dtype != np.bool_:
            raise ValueError(
                f"ranked must be a boolean relevance matrix when query_labels is None, got dtype {matrix.dtype}"
            )
        relevance = matrix
    else:
        labels = np.asarray(query_labels).reshape(-1)
        if labels.shape != (num_queries,):
            raise ValueError(f"query_labels must have shape ({num_queries},), got {np.shape(query_labels)}")
        relevance = matrix == labels[:, np.newaxis]

    totals = np.asarray(num_relevant)
    if totals.ndim == 0:
        totals = np.full(num_queries, totals)
    if totals.shape != (num_queries,):
        raise ValueError(f"num_relevant must be an int or have shape ({num_queries},), got shape {totals.shape}")
    if not np.issubdtype(totals.dtype, np.integer):
        raise ValueError(f"num_relevant must be integer, got dtype {totals.dtype}")
    if num_queries and totals.min() < 1:
        raise ValueError(f"num_relevant must be >= 1 (AP is undefined without relevant items), got {totals.min()}")

    # Only the relevant positions matter: nonzero() yields them row-major, so an item's index among
    # its row's relevant items is its global index minus the index of the row's first relevant item.
    rows, cols = np.nonzero(relevance)
    found = np.bincount(rows, minlength=num_queries)
    too_many = found > totals
    if too_many.any():
        row = int(np.argmax(too_many))
        raise ValueError(
            f"query {row} has {found[row]} relevant items in its ranking but num_relevant={totals[row]}; "
            "is the query itself still in its ranking?"
        )
    row_starts = np.concatenate(([0], np.cumsum(found)[:-1]))
    hits_so_far = np.arange(rows.size) - row_starts[rows] + 1
    precisions = hits_so_far / (cols + 1)
    ap_values: npt.NDArray[np.float64] = np.bincount(rows, weights=precisions, minlength=num_queries) / totals
    return ap_values


def mean_average_precision(
    ranked: npt.ArrayLike,
    num_relevant: int | npt.ArrayLike,
    *,
    query_labels: npt.ArrayLike | None = None,
) -> float:
    """Mean over queries of ``average_precision_from_ranking`` (same arguments).

    Args:
        ranked: ``(num_queries, depth)`` relevance matrix, or ranked labels with ``query_labels``.
        num_relevant: R per query (int or ``(num_queries,)``).
        query_labels: ``(num_queries,)`` labels, or ``None`` for a relevance matrix.

    Returns:
        The mAP in [0, 1].

    Raises:
        ValueError: As ``average_precision_from_ranking``, or when there are no queries.

    """
    ap_values = average_precision_from_ranking(ranked, num_relevant, query_labels=query_labels)
    if ap_values.size == 0:
        raise ValueError("mean_average_precision needs at least one query, got 0")
    return float(ap_values.mean())


def average_precision(relevance: npt.ArrayLike, num_relevant: int) -> float:
    """AP of one query from its boolean relevance vector.

    Args:
        relevance: ``(depth,)`` booleans, ``True`` where the ranked item is relevant, best first.
        num_relevant: R, relevant items in the collection (query excluded).

    Returns:
        The AP in [0, 1].

    Raises:
        ValueError: If ``relevance`` is not 1-D boolean, R < 1, or more relevant items than R.

    """
    vector = np.asarray(relevance)
    if vector.ndim != 1:
        raise ValueError(f"relevance must be 1-D, got shape {vector.shape}")
    return float(average_precision_from_ranking(vector, num_relevant)[0])


def ranking_ap(query_label: int, ranked_labels: npt.ArrayLike, num_relevant: int) -> float:
    """AP of one query from the class labels of its ranked items.

    Args:
        query_label: The query's class label.
        ranked_labels: ``(depth,)`` labels of the returned items, best first, query excluded.
        num_relevant: R, items of ``query_label``'s class in the collection (query excluded).

    Returns:
        The AP in [0, 1].

    Raises:
        ValueError: If ``ranked_labels`` is not 1-D, R < 1, or more matches than R.

    """
    labels = np.asarray(ranked_labels)
    if labels.ndim != 1:
        raise ValueError(f"ranked_labels must be 1-D, got shape {labels.shape}")
    return float(average_precision_from_ranking(labels, num_relevant, query_labels=[query_label])[0])


def relevance_from_ids(
    ranked_ids: npt.ArrayLike,
    item_labels: npt.ArrayLike,
    query_labels: npt.ArrayLike,
    *,
    query_ids: npt.ArrayLike | None = None,
) -> npt.NDArray[np.bool_]:
    """Turn a ranked id matrix into a relevance matrix, dropping each query from its own row.

    Args:
        ranked_ids: ``(num_queries, depth)`` row indices into ``item_labels``, best first, padded with -1.
        item_labels: ``(num_items,)`` class label of every collection item.
        query_labels: ``(num_queries,)`` class label of each query.
        query_ids: ``(num_queries,)`` row index of each query in the collection, or ``None`` when the
            queries are not collection items. Where given, the query's own id is removed from its row
            and later items move up one rank (the row is padded with ``False`` at the end).

    Returns:
        ``(num_queries, depth)`` boolean relevance matrix for ``average_precision_from_ranking``.

    Raises:
        ValueError: On bad shapes or an id outside ``[-1, num_items)``.

    """
    ids, _ = _as_2d(ranked_ids, "ranked_ids")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ranked_ids must be integer, got dtype {ids.dtype}")
    labels = np.asarray(item_labels)
    if labels.ndim != 1:
        raise ValueError(f"item_labels must be 1-D, got shape {labels.shape}")
    num_queries = ids.shape[0]
    queries = np.asarray(query_labels).reshape(-1)
    if queries.shape != (num_queries,):
        raise ValueError(f"query_labels must have shape ({num_queries},), got {np.shape(query_labels)}")
    if ids.size and (ids.min() < PAD_ID or ids.max() >= labels.size):
        bad = ids.min() if ids.min() < PAD_ID else ids.max()
        raise ValueError(f"ranked_ids must be in [-1, {labels.size}), got {bad}")
    if query_ids is not None:
        own = np.asarray(query_ids).reshape(-1)
        if own.shape != (num_queries,):
            raise ValueError(f"query_ids must have shape ({num_queries},), got {np.shape(query_ids)}")
        is_self = ids == own[:, np.newaxis]
        # A stable sort on the mask moves the query's own entry to the end and keeps the rest in order.
        order = np.argsort(is_self, axis=1, kind="stable")
        ids = np.take_along_axis(ids, order, axis=1)
        ids = np.where(np.take_along_axis(is_self, order, axis=1), PAD_ID, ids)
    valid = ids != PAD_ID
    relevance: npt.NDArray[np.bool_] = valid & (labels[np.where(valid, ids, 0)] == queries[:, np.newaxis])
    return relevance


def precision_at_k(relevance: npt.ArrayLike, k: int) -> float:
    """Share of the top ``k`` slots holding a relevant item, averaged over queries.

    The denominator is always ``k``: a ranking shorter than ``k`` counts its empty slots as misses.

    Args:
        relevance: ``(depth,)`` or ``(num_queries, depth)`` booleans, best first.
        k: Cut-off, >= 1.

    Returns:
        Precision@k in [0, 1] (mean over queries for a matrix).

    Raises:
        ValueError: If ``k`` < 1, ``relevance`` is not boolean, or there are no queries.

    """
    _check_k(k)
    matrix, _ = _as_2d(relevance, "relevance")
    if matrix.dtype != np.bool_:
        raise ValueError(f"relevance must be boolean, got dtype {matrix.dtype}")
    if matrix.shape[0] == 0:
        raise ValueError("precision_at_k needs at least one query, got 0")
    return float(matrix[:, :k].sum(axis=1).mean() / k)


def recall_at_k(returned_ids: npt.ArrayLike, exact_ids: npt.ArrayLike, k: int) -> float:
    """Recall of the approximate top ``k`` against the exact scan: ``|returned[:k] ∩ exact[:k]| / k``.

    Args:
        returned_ids: ``(depth,)`` or ``(num_queries, depth)`` ids returned by the index, best first;
            may be shorter than ``k`` or padded with -1.
        exact_ids: Same leading shape, the exact (sequential scan) ranking; needs at least ``k`` columns
            of distinct ids.
        k: Cut-off, >= 1.

    Returns:
        Recall@k in [0, 1] (mean over queries for a matrix).

    Raises:
        ValueError: If ``k`` < 1, the shapes disagree, or ``exact_ids`` has fewer than ``k`` columns.

    """
    _check_k(k)
    returned, _ = _as_2d(returned_ids, "returned_ids")
    exact, _ = _as_2d(exact_ids, "exact_ids")
    if returned.shape[0] != exact.shape[0]:
        raise ValueError(f"returned_ids has {returned.shape[0]} queries but exact_ids has {exact.shape[0]}")
    if returned.shape[0] == 0:
        raise ValueError("recall_at_k needs at least one query, got 0")
    if exact.shape[1] < k:
        raise ValueError(f"exact_ids needs at least k={k} columns, got {exact.shape[1]}")
    top_exact = exact[:, :k]
    # Count exact items found among the returned ones, so duplicates in returned_ids count once.
    found = (top_exact[:, :, np.newaxis] == returned[:, np.newaxis, :k]).any(axis=2).sum(axis=1)
    return float(found.mean() / k)


def _candidate_count(candidates: int | npt.ArrayLike, *, distinct: bool) -> int:
    if isinstance(candidates, bool):
        raise ValueError(f"candidates must be a count or an array of ids, got {candidates!r}")
    if isinstance(candidates, int | np.integer):
        count = int(candidates)
    else:
        ids = np.asarray(candidates)
        if ids.ndim != 1:
            raise ValueError(f"candidates must be a count or a 1-D array of ids, got shape {ids.shape}")
        count = int(np.unique(ids).size) if distinct else int(ids.size)
    if count < 0:
        raise ValueError(f"candidates must be >= 0, got {count}")
    return count


def improvement_in_efficiency(collection_size: int, candidates: int | npt.ArrayLike) -> float:
    """Improvement in Efficiency (IE), each candidate counted once.

    IE = distance computations of the sequential scan (``collection_size``) / distance computations of
    the LSH query (distinct candidates, as ``LshIndex.query`` ranks a set). IE >= 1 whenever the
    candidates are a subset of the collection. For an aggregate over queries pass the totals
    (``num_queries * collection_size``, summed candidate counts): a ratio of sums, not a mean of ratios.

    Args:
        collection_size: Items the sequential scan compares the query with, >= 1.
        candidates: Either the count of distinct candidates, or a ``(n,)`` array of candidate ids from
            all tables (repeats are removed here).

    Returns:
        The IE; ``math.inf`` when there are no candidates (the query computed no distance).

    Raises:
        ValueError: If ``collection_size`` < 1 or ``candidates`` is negative or not 1-D.

    """
    return _ie(collection_size, _candidate_count(candidates, distinct=True))


def improvement_in_efficiency_paper(collection_size: int, candidates: int | npt.ArrayLike) -> float:
    """Improvement in Efficiency as the paper computed it: a candidate counts once per table that returned it.

    This reproduces the paper's tables (Section 5), where IE falls below 1 for L=5, K=1 (0.46): with few,
    large buckets almost every item is found in every table and is counted up to L times.

    Args:
        collection_size: Items the sequential scan compares the query with, >= 1.
        candidates: Either the candidate count summed over tables (with repeats), or a ``(n,)`` array of
            the candidate ids of all tables concatenated (repeats kept).

    Returns:
        The IE; ``math.inf`` when there are no candidates.

    Raises:
        ValueError: If ``collection_size`` < 1 or ``candidates`` is negative or not 1-D.

    """
    return _ie(collection_size, _candidate_count(candidates, distinct=False))


def _ie(collection_size: int, count: int) -> float:
    if isinstance(collection_size, bool) or not isinstance(collection_size, int | np.integer) or collection_size < 1:
        raise ValueError(f"collection_size must be a positive integer, got {collection_size!r}")
    return math.inf if count == 0 else int(collection_size) / count


def bucket_purity(labels: npt.ArrayLike) -> float:
    """Share of a bucket's items that belong to its majority class.

    Args:
        labels: ``(bucket_size,)`` class labels of the items in one bucket.

    Returns:
        Purity in (0, 1]; 1 means a single class.

    Raises:
        ValueError: If the bucket is empty or ``labels`` is not 1-D.

    """
    values = np.asarray(labels)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {values.shape}")
    _, counts = np.unique(values, return_counts=True)
    return float(counts.max() / values.size)


def average_bucket_purity(buckets: Iterable[npt.ArrayLike]) -> tuple[float, float]:
    """Mean and (population) standard deviation of ``bucket_purity`` over buckets, as in the paper's tables.

    Args:
        buckets: One ``(bucket_size,)`` label array per non-empty bucket (all tables together).

    Returns:
        ``(mean purity, std purity)``.

    Raises:
        ValueError: If there are no buckets or a bucket is empty.

    """
    purities = np.array([bucket_purity(bucket) for bucket in buckets], dtype=np.float64)
    if purities.size == 0:
        raise ValueError("average_bucket_purity needs at least one bucket, got 0")
    return float(purities.mean()), float(purities.std())


def pearson_correlation(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation coefficient, e.g. per-class CNN recall against per-class mAP (paper Section 6).

    Raises instead of returning ``nan`` so a degenerate evaluation fails loudly.

    Args:
        x: ``(n,)`` values.
        y: ``(n,)`` values paired with ``x``.

    Returns:
        The coefficient in [-1, 1].

    Raises:
        ValueError: If the shapes differ, n < 2, a value is not finite, or either input has zero variance.

    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or xs.shape != ys.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {xs.shape} and {ys.shape}")
    if xs.size < 2:
        raise ValueError(f"pearson_correlation needs at least 2 points, got {xs.size}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite")
    dx = xs - xs.mean()
    dy = ys - ys.mean()
    sx = float(np.sqrt(dx @ dx))
    sy = float(np.sqrt(dy @ dy))
    if sx == 0.0 or sy == 0.0:
        raise ValueError(f"pearson_correlation is undefined for zero variance (std x={sx}, std y={sy})")
    return float(np.clip((dx @ dy) / (sx * sy), -1.0, 1.0))


@dataclass(frozen=True)
class ClassSummary:
    """One class's row of the paper's Algorithm 1 (class-by-class analysis)."""

    label: int
    num_queries: int
    mean_ap: float
    min_ap: float
    max_ap: float
    range_ap: float
    std_ap: float
    best_query_id: int
    worst_query_id: int


def per_class_ap(ap_values: npt.ArrayLike, query_labels: npt.ArrayLike, query_ids: npt.ArrayLike) -> list[ClassSummary]:
    """Per-class AP statistics, the paper's Algorithm 1.

    For each class: mAP, min and max AP, max-min range, population std (``ddof=0``, as ``np.std``), and
    the ids of the best and worst queries (first one in input order on ties).

    Args:
        ap_values: ``(num_queries,)`` AP of each query.
        query_labels: ``(num_queries,)`` integer class label of each query.
        query_ids: ``(num_queries,)`` id of each query (e.g. ``Image.id``).

    Returns:
        One ``ClassSummary`` per class present, sorted by label.

    Raises:
        ValueError: If the shapes differ, there are no queries, or an AP is outside [0, 1].

    """
    aps = np.asarray(ap_values, dtype=np.float64)
    labels = np.asarray(query_labels)
    ids = np.asarray(query_ids)
    if aps.ndim != 1 or labels.shape != aps.shape or ids.shape != aps.shape:
        raise ValueError(
            f"ap_values, query_labels and query_ids must be 1-D of equal length, "
            f"got shapes {aps.shape}, {labels.shape}, {ids.shape}"
        )
    if aps.size == 0:
        raise ValueError("per_class_ap needs at least one query, got 0")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"query_labels must be integer, got dtype {labels.dtype}")
    if np.isnan(aps).any() or aps.min() < 0.0 or aps.max() > 1.0:
        raise ValueError(f"ap_values must be in [0, 1], got min {aps.min()} and max {aps.max()}")

    summaries = []
    for label in np.unique(labels):  # one iteration per class (~250), not per item
        class_aps = aps[labels == label]
        class_ids = ids[labels == label]
        low, high = float(class_aps.min()), float(class_aps.max())
        summaries.append(
            ClassSummary(
                label=int(label),
                num_queries=int(class_aps.size),
                mean_ap=float(class_aps.mean()),
                min_ap=low,
                max_ap=high,
                range_ap=high - low,
                std_ap=float(class_aps.std()),
                best_query_id=int(class_ids[np.argmax(class_aps)]),
                worst_query_id=int(class_ids[np.argmin(class_aps)]),
            )
        )
    return summaries


def class_summary_to_dict(summary: ClassSummary, class_name: str | Mapping[int, str]) -> dict[str, Any]:
    """Render a ``ClassSummary`` in the paper's JSON form (Figure 5), plus best and worst query ids.

    Args:
        summary: One class's statistics from ``per_class_ap``.
        class_name: The class name, or a mapping from label to name.

    Returns:
        ``{"class", "label", "mAP", "min AP", "max AP", "max-min range", "std", "best query id",
        "worst query id"}`` with JSON-serialisable values.

    Raises:
        ValueError: If a mapping lacks the summary's label.

    """
    if isinstance(class_name, str):
        name = class_name
    elif summary.label in class_name:
        name = class_name[summary.label]
    else:
        raise ValueError(f"class_name has no entry for label {summary.label}")
    return {
        "class": name,
        "label": summary.label,
        "mAP": summary.mean_ap,
        "min AP": summary.min_ap,
        "max AP": summary.max_ap,
        "max-min range": summary.range_ap,
        "std": summary.std_ap,
        "best query id": summary.best_query_id,
        "worst query id": summary.worst_query_id,
    }


def distractor_share(is_distractor: npt.ArrayLike, k: int) -> float:
    """Share of the returned top ``k`` items that are distractors (e.g. photos among sketches).

    The denominator is the number of items actually returned in the top ``k`` (``min(k, depth)``).

    Args:
        is_distractor: ``(depth,)`` or ``(num_queries, depth)`` booleans over the ranked items, best first.
        k: Cut-off, >= 1.

    Returns:
        The share in [0, 1] (over all queries' top-k items together for a matrix).

    Raises:
        ValueError: If ``k`` < 1, the mask is not boolean, or it has no items.

    """
    _check_k(k)
    matrix, _ = _as_2d(is_distractor, "is_distractor")
    if matrix.dtype != np.bool_:
        raise ValueError(f"is_distractor must be boolean, got dtype {matrix.dtype}")
    top = matrix[:, :k]
    if top.size == 0:
        raise ValueError(f"is_distractor has no ranked items (shape {matrix.shape})")
    return float(top.mean())


def time_queries(fn: Callable[[QueryT], object], queries: Sequence[QueryT], warmup: int = 1) -> npt.NDArray[np.float64]:
    """Wall-clock time of ``fn(query)`` for each query (``time.perf_counter``).

    Args:
        fn: Runs one query; its result is ignored.
        queries: The queries, timed in order.
        warmup: Untimed calls made first, on ``queries[0], queries[1], ...`` (cycling), to fill caches
            and trigger lazy initialisation; >= 0.

    Returns:
        ``(len(queries),)`` float64 seconds.

    Raises:
        ValueError: If ``queries`` is empty or ``warmup`` < 0.

    """
    if len(queries) == 0:
        raise ValueError("time_queries needs at least one query, got 0")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    for i in range(warmup):
        fn(queries[i % len(queries)])
    times = np.empty(len(queries), dtype=np.float64)
    for i, query in enumerate(queries):
        start = time.perf_counter()
        fn(query)
        times[i] = time.perf_counter() - start
    return times


def percentile_ms(times: npt.ArrayLike, q: float) -> float:
    """Return the ``q``-th percentile of ``times`` (seconds) in milliseconds, e.g. ``q=95`` for p95 latency.

    Args:
        times: ``(n,)`` durations in seconds, as from ``time_queries``.
        q: Percentile in [0, 100] (linear interpolation, NumPy's default).

    Returns:
        The percentile in milliseconds.

    Raises:
        ValueError: If ``times`` is empty, not 1-D, or has a negative or non-finite value, or ``q`` is
            outside [0, 100].

    """
    values = np.asarray(times, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"times must be a non-empty 1-D array, got shape {values.shape}")
    if not np.isfinite(values).all() or values.min() < 0:
        raise ValueError(f"times must be finite and >= 0, got min {values.min()}")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    return float(np.percentile(values, q) * 1000.0)
