"""Relevance protocols as pure functions: a query set against a gallery, by exact scan and through an LSH index.

NumPy and the pure LSH core only (no Django), so the protocol maths run from a command, a benchmark or a test
alike. Relevant = same label. Scores: mAP (a relevant item the method never returned contributes 0), precision@10
and hit@1 (the first result is relevant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.metrics import average_precision_from_ranking
from indexing.lsh.autotune import TuneResult, autotune
from indexing.lsh.hashing import fit_center, make_family
from indexing.lsh.index import LshIndex
from indexing.lsh.scan import as_unit_float32, look_tie_break

__all__ = ["Look", "Scores", "expand_queries", "lsh_scores", "scan_scores", "tuned_index"]

BLOCK = 256


@dataclass(frozen=True)
class Scores:
    """One method on one query set.

    Attributes:
        map: Mean average precision.
        p10: Precision@10.
        hit1: Share of queries whose first result is relevant.
        queries: How many queries were scored.
        candidates: Mean distance computations per query (the gallery size for the scan).
    """

    map: float
    p10: float
    hit1: float
    queries: int
    candidates: float

    def as_dict(self) -> dict[str, float]:
        """Rounded for a stored run."""
        return {
            "mAP": round(self.map, 4),
            "p@10": round(self.p10, 4),
            "hit@1": round(self.hit1, 4),
            "queries": self.queries,
            "candidates": round(self.candidates, 1),
        }


@dataclass(frozen=True, eq=False)
class Look:
    """The served look tie-break (``indexing.lsh.scan.look_tie_break``) of a ranking, as a search does it.

    Attributes:
        queries: ``(q, d')`` the queries' second vectors (the base backbone's, L2-normalised), aligned with the
            queries ranked.
        gallery: ``(n, d')`` the gallery's, aligned with its rows.
        weight: ``SKETCHSEARCH_LOOK_WEIGHT``.
        depth: Hits of each ranking re-ordered (a served search orders the k hits it shows).
    """

    queries: np.ndarray
    gallery: np.ndarray
    weight: float
    depth: int

    def reorder(self, query: int, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Gallery rows ``ids`` (ranked, with their ``scores``) with their first ``depth`` re-ordered by look."""
        head = ids[: self.depth]
        looks = self.gallery[head] @ self.queries[query]
        reordered, _ = look_tie_break(head, scores[: self.depth], looks, self.weight)
        return np.concatenate([reordered, ids[self.depth :]])


def _check(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray) -> None:
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries {queries.shape} and gallery {gallery.shape} must be (q, d) and (n, d)")
    if len(query_labels) != len(queries) or len(gallery_labels) != len(gallery):
        raise ValueError("one label per query and per gallery item")
    if len(queries) == 0:
        raise ValueError("no query")


def expand_queries(queries: np.ndarray, gallery: np.ndarray, top: np.ndarray, *, alpha: float = 3.0) -> np.ndarray:
    """Alpha query expansion (alpha-QE): each query plus its top results weighted by similarity^alpha, normalised.

    Args:
        queries: ``(q, d)`` unit rows.
        gallery: ``(n, d)`` unit rows.
        top: ``(q, m)`` gallery rows of each query's first results (``-1`` pads).
        alpha: Weight exponent.

    Returns:
        ``(q, d)`` unit rows.
    """
    valid = top >= 0
    neighbours = gallery[np.where(valid, top, 0)]  # (q, m, d)
    similarity = np.einsum("qd,qmd->qm", queries, neighbours)
    weights = np.where(valid, np.maximum(similarity, 0.0) ** alpha, 0.0)
    expanded = queries + np.einsum("qm,qmd->qd", weights, neighbours)
    return as_unit_float32(expanded)


def scan_scores(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    expansion: int = 0,
    look: Look | None = None,
) -> Scores:
    """Exact scan: every query ranks the whole gallery by cosine similarity.

    Args:
        queries: ``(q, d)`` vectors (normalised here).
        query_labels: ``(q,)``.
        gallery: ``(n, d)`` vectors.
        gallery_labels: ``(n,)``.
        expansion: Top results folded into the query by :func:`expand_queries` before a second ranking (0: none).
        look: The served look tie-break of each ranking (None: none).

    Returns:
        The :class:`Scores`.

    Raises:
        ValueError: Mismatched shapes or no query.
    """
    queries, gallery = as_unit_float32(queries), as_unit_float32(gallery)
    _check(queries, query_labels, gallery, gallery_labels)
    totals = np.array([(gallery_labels == label).sum() for label in query_labels])
    aps, p10, hit1 = [], [], []
    for start in range(0, len(queries), BLOCK):
        block = queries[start : start + BLOCK]
        similarities = block @ gallery.T
        order = np.argsort(-similarities, axis=1, kind="stable")
        if expansion:
            block = expand_queries(block, gallery, order[:, :expansion])
            similarities = block @ gallery.T
            order = np.argsort(-similarities, axis=1, kind="stable")
        if look is not None:
            for row in range(len(block)):
                order[row] = look.reorder(start + row, order[row], similarities[row, order[row]])
        relevant = gallery_labels[order] == query_labels[start : start + BLOCK, np.newaxis]
        aps.append(average_precision_from_ranking(relevant, np.maximum(totals[start : start + BLOCK], 1)))
        p10.append(relevant[:, :10].mean(axis=1))
        hit1.append(relevant[:, 0])
    return Scores(
        float(np.concatenate(aps).mean()),
        float(np.concatenate(p10).mean()),
        float(np.concatenate(hit1).mean()),
        len(queries),
        float(len(gallery)),
    )


def tuned_index(gallery: np.ndarray, *, target_recall: float = 0.95, seed: int = 0) -> tuple[LshIndex, TuneResult]:
    """The index ``build_index`` would serve over ``gallery``: binary, centred, L, K and probes tuned.

    Returns:
        ``(index, tuning)``; query it with ``probes=tuning.chosen.probes``.
    """
    gallery = as_unit_float32(gallery)
    tuning = autotune(gallery, family="binary", target_recall=target_recall, center=True, seed=seed)
    family = make_family(
        "binary",
        gallery.shape[1],
        num_tables=tuning.chosen.num_tables,
        hashes_per_table=tuning.chosen.hashes_per_table,
        seed=seed,
        center=fit_center(gallery),
    )
    return LshIndex(family).fit(gallery), tuning


def lsh_scores(
    index: LshIndex,
    probes: int,
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    depth: int = 1000,
    min_candidates: int = 0,
    top: list[np.ndarray] | None = None,
    look: Look | None = None,
) -> Scores:
    """Through an LSH index: each query's candidates, re-ranked exactly; unreturned relevant items score 0.

    ``min_candidates`` doubles the probes of a query whose buckets hold fewer candidates, as a served search with
    the index's default probes does (``SKETCHSEARCH_MIN_CANDIDATES``). ``top``, when given, receives each query's
    first 10 returned gallery rows.

    Args:
        index: Fitted on the gallery (ids = gallery rows).
        probes: Extra buckets per table.
        queries: ``(q, d)``.
        query_labels: ``(q,)``.
        gallery_labels: ``(n,)`` aligned with the index's rows.
        depth: Results kept per query for AP (the rest count as not returned).
        look: The served look tie-break of each query's results (None: none).

    Returns:
        The :class:`Scores`.
    """
    queries = as_unit_float32(queries)
    if len(queries) == 0:
        raise ValueError("no query")
    aps, p10, hit1, candidates = [], [], [], []
    for number, (vector, label) in enumerate(zip(queries, query_labels, strict=True)):
        result = index.query(vector, top_k=depth, probes=probes, min_candidates=min_candidates)
        ids = result.ids if look is None else look.reorder(number, result.ids, result.scores)
        relevant = gallery_labels[ids] == label
        if top is not None:
            top.append(ids[:10])
        padded = np.zeros(max(depth, 10), dtype=bool)
        padded[: len(relevant)] = relevant
        total = max(int((gallery_labels == label).sum()), 1)
        aps.append(float(average_precision_from_ranking(padded[np.newaxis], np.array([total]))[0]))
        p10.append(padded[:10].mean())
        hit1.append(bool(padded[0]))
        candidates.append(result.candidates)
    return Scores(
        float(np.mean(aps)), float(np.mean(p10)), float(np.mean(hit1)), len(queries), float(np.mean(candidates))
    )
