"""The evaluation protocol of the paper (sections 4.3, 5 and 6) as pure functions over in-memory matrices.

NumPy and the pure LSH core only, no Django (tests/lsh/test_purity.py checks it): ``evaluation.data`` loads
the matrices from the database, ``evaluation.runs`` stores each run as an EvaluationRun, ``evaluation.reports``
writes its tables and figures.

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

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from evaluation import metrics
from indexing.lsh.hashing import FAMILIES, HashFamily, fit_center, make_family
from indexing.lsh.index import ExactIndex, LshIndex
from indexing.lsh.stats import BucketStats, bucket_stats
from indexing.lsh.store import BucketStore

T = TypeVar("T")
Progress = Callable[[Iterable[T], str, int], Iterable[T]]

TOP_K = 10
DISTRACTOR_KS = (10, 50)
LATENCY_QUERIES = 100
QUERY_BLOCK = 256  # queries scored per matrix product: bounds the (block, gallery) temporaries


class EvaluationError(ValueError):
    """Bad input to an evaluation (unknown name, no features, nothing to query); the message names the value."""


def no_progress(items: Iterable[T], description: str, total: int) -> Iterable[T]:
    return items


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


def label_key(label: str) -> str:
    """The class a label names across data sets: "wine-bottle", "wine_bottle", "Wine bottle" are one class."""
    return "".join(ch for ch in label.lower() if ch not in " _-")


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


def _query_keys(family: HashFamily, vectors: np.ndarray, probes: int) -> np.ndarray:
    """(q, num_tables, 1 + probes) bucket keys to look up per query, home bucket first."""
    if probes == 0:
        keys: np.ndarray = family.keys(vectors)[:, :, np.newaxis]
        return keys
    return np.stack([family.probe_keys(vector, probes) for vector in vectors])


def lsh_outcome(
    data: EvaluationData, ranking: ScanRanking, family: HashFamily, gallery_keys: np.ndarray, *, probes: int = 0
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
    data: EvaluationData,
    family: HashFamily,
    *,
    probes: int,
    store: BucketStore | None = None,
    count: int = LATENCY_QUERIES,
) -> float:
    """p50 of ``LshIndex.query`` (in-memory buckets, or ``store``'s stored buckets when given)."""
    index = LshIndex(family, store=store).fit(data.gallery_vectors, data.gallery_ids, add_to_store=store is None)
    times = metrics.time_queries(lambda vector: index.query(vector, TOP_K, probes), _latency_sample(data, count))
    return metrics.percentile_ms(times, 50)


def gallery_summary(data: EvaluationData) -> dict[str, Any]:
    return {
        "gallery size": int(data.gallery_ids.shape[0]),
        "distractors": int(data.is_distractor.sum()),
        "queries": int(data.query_ids.shape[0]),
        "classes": int(np.unique(data.query_labels).shape[0]),
        "skipped queries": data.skipped_queries,
        "avg relevant per query": float(data.num_relevant.mean()),
    }


def stats_columns(stats: BucketStats) -> dict[str, Any]:
    return {
        "avg bucket purity": stats.avg_purity,
        "std bucket purity": stats.std_purity,
        "number of buckets": stats.num_buckets,
        "number of items": stats.num_items,
        "avg items per bucket": stats.avg_items_per_bucket,
        "std items per bucket": stats.std_items_per_bucket,
    }


# ---------------------------------------------------------------------------------------------------------------
# The sweep (section 5): one row per (family, L, K, probes)


def sweep_check(
    family: str | Sequence[str], grid: Sequence[tuple[int, int]], probes: Sequence[int], w: float
) -> tuple[list[str], list[int]]:
    """The sweep's families and probe settings, each once; EvaluationError on a name or value out of range."""
    families = [family] if isinstance(family, str) else list(dict.fromkeys(family))
    for name in families:
        if name not in FAMILIES:
            raise EvaluationError(f"unknown family {name!r}: use {' or '.join(FAMILIES)}")
    if not grid:
        raise EvaluationError("the grid is empty")
    for num_tables, hashes in grid:
        if num_tables < 1 or hashes < 1:
            raise EvaluationError(f"bad grid point L={num_tables} K={hashes}: both must be >= 1")
        for name in families:
            bound = FAMILIES[name].max_hashes
            if bound is not None and hashes > bound:
                label = FAMILIES[name].label
                raise EvaluationError(f"bad grid point L={num_tables} K={hashes}: {label} needs K <= {bound}")
    probe_list = list(dict.fromkeys(probes)) or [0]
    if min(probe_list) < 0:
        raise EvaluationError(f"probes must be >= 0, got {min(probe_list)}")
    if w <= 0:
        raise EvaluationError(f"w must be > 0, got {w}")
    return families, probe_list


def sweep_rows(
    data: EvaluationData,
    ranking: ScanRanking,
    *,
    families: Sequence[str],
    grid: Sequence[tuple[int, int]],
    probes: Sequence[int],
    w: float,
    center: bool,
    seed: int,
    latency_queries: int = LATENCY_QUERIES,
    progress: Progress[Any] | None = None,
) -> list[dict[str, Any]]:
    """Each configuration hashed in memory with the index's family code; the arguments as :func:`sweep_check` left them.

    A probe setting past the family's ``max_probes`` (K too small) is evaluated at ``max_probes``, once.
    """
    report = progress or no_progress
    mean = fit_center(data.gallery_vectors) if center else None
    configurations = [(name, num_tables, hashes) for name in families for num_tables, hashes in grid]
    rows: list[dict[str, Any]] = []
    for name, num_tables, hashes in report(configurations, "configurations", len(configurations)):
        hasher = make_family(
            name, data.gallery_vectors.shape[1], num_tables=num_tables, hashes_per_table=hashes, w=w, seed=seed,
            center=mean,
        )  # fmt: skip
        gallery_keys = hasher.keys(data.gallery_vectors)
        stats = stats_columns(bucket_stats(gallery_keys, data.gallery_labels))
        for probe in probes:
            effective = min(probe, hasher.max_probes)
            if effective != probe and effective in probes:
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
    return rows
