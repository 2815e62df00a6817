"""Search indexes with one ``fit`` / ``query`` interface: exact sequential scan and LSH.

Both rank by cosine similarity on L2-normalised float32 vectors. :class:`LshIndex` gathers candidates
from the buckets of a :class:`~indexing.lsh.store.BucketStore` and re-ranks them exactly, so its
scores are true cosines and only its recall is approximate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from indexing.lsh.hashing import HashFamily
from indexing.lsh.scan import as_unit_float32, cosine_top_k, normalize, rerank
from indexing.lsh.store import BucketStore, InMemoryBucketStore

__all__ = ["Candidates", "ExactIndex", "LshIndex", "QueryResult", "probe_until"]


@dataclass(frozen=True, eq=False)  # eq=False: comparing NumPy fields with == is ambiguous
class QueryResult:
    """Answer to one query.

    Attributes:
        ids: int64 ``(k,)`` item ids, best first.
        scores: float32 ``(k,)`` cosine similarities, aligned with ``ids``.
        candidates: distance computations actually done: the number of distinct candidates
            re-ranked (``n`` for the exact scan). ``IE = n / candidates``.
        candidates_with_repeats: sum of the sizes of the probed buckets, the paper's way of counting
            (an item found in several tables counts once per table); ``n`` for the exact scan.
        buckets_probed: ``(table, key)`` buckets looked up (0 for the exact scan).
    """

    ids: np.ndarray
    scores: np.ndarray
    candidates: int
    candidates_with_repeats: int
    buckets_probed: int = 0


@dataclass(frozen=True, eq=False)
class Candidates:
    """What the buckets of one query hold, before any re-rank.

    Attributes:
        ids: int64 distinct item ids, ascending.
        with_repeats: the probed buckets' total size (an item in several buckets counts once per bucket).
        probes: the extra buckets per table the last lookup used.
        buckets_probed: ``(table, key)`` buckets looked up by the last lookup.
    """

    ids: np.ndarray
    with_repeats: int
    probes: int
    buckets_probed: int


def _as_ids(ids: np.ndarray | None, count: int) -> np.ndarray:
    if ids is None:
        return np.arange(count, dtype=np.int64)
    array = np.asarray(ids)
    if array.shape != (count,):
        raise ValueError(f"ids must have shape ({count},), got shape {array.shape}")
    array = array.astype(np.int64)
    if np.unique(array).shape[0] != count:
        raise ValueError("ids must be distinct")
    return array


class _IdMap:
    """Maps item ids back to rows of the vector matrix."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._identity = bool(np.array_equal(ids, np.arange(ids.shape[0])))
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the given ids; ids that were not fitted are dropped."""
        if self._identity:
            return ids[(ids >= 0) & (ids < self.ids.shape[0])]
        if self._sorted.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        position = np.minimum(np.searchsorted(self._sorted, ids), self._sorted.shape[0] - 1)
        return self._order[position[self._sorted[position] == ids]]


def _as_query(vector: np.ndarray, dim: int) -> np.ndarray:
    vector = np.asarray(vector)
    if vector.shape != (dim,):
        raise ValueError(f"vector must have shape ({dim},), got shape {vector.shape}")
    return normalize(vector)


DENSE_DISTINCT = 128  # _distinct marks a mask when the ids span at most this many values per id, else sorts


def _distinct(ids: np.ndarray) -> np.ndarray:
    """The distinct values of ``ids``, ascending.

    When the ids are dense (they span at most :data:`DENSE_DISTINCT` values per id: a boolean mask of at most that
    many bytes per id), by marking the mask: 0.5 ms where a sort takes 1.25 for the ~14,000 bucket hits of a
    search among a million consecutive image ids (NumPy 2's ``np.unique`` is slower still). Otherwise by a sort.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    if ids.shape[0] < 2:
        return np.sort(ids)
    low, high = int(ids.min()), int(ids.max())
    if high - low < DENSE_DISTINCT * ids.shape[0]:
        seen = np.zeros(high - low + 1, dtype=bool)
        seen[ids - low] = True
        return np.flatnonzero(seen) + low
    ordered = np.sort(ids)
    keep = np.empty(ordered.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def probe_until(
    family: HashFamily,
    vector: np.ndarray,
    lookup: Callable[[np.ndarray], np.ndarray],
    *,
    probes: int,
    min_candidates: int,
) -> tuple[np.ndarray, int, int]:
    """Look up a query's buckets, doubling the probes until they hold ``min_candidates`` distinct items.

    A query unlike the collection (a drawing in another style, a half-finished one) can hash into near-empty
    buckets where the collection's own items, which the probes were tuned on, do not; a few more probes then
    cost one more lookup each and bring back the candidates a re-rank needs.

    Args:
        family: The hash family.
        vector: The (normalised) query.
        lookup: ``(m, 2)`` (table, key) pairs -> item ids, one per (bucket, member), repeats included.
        probes: Extra buckets per table to start with.
        min_candidates: Distinct candidates wanted (0: a single lookup at ``probes``).

    Returns:
        ``(ids, repeats, probes_used)``: the last lookup's distinct ids (ascending), how many it found counting
        repeats (once per table an id was found in), and the probes it used.
    """
    limit = family.max_probes
    while True:
        keys = family.probe_keys(vector, probes)  # (num_tables, 1 + probes)
        tables = np.repeat(np.arange(keys.shape[0], dtype=np.int64), keys.shape[1])
        hits = lookup(np.column_stack([tables, keys.ravel()]))
        # Fewer hits than wanted, repeats included, cannot hold enough distinct ids: no need to count them.
        if probes >= limit or hits.shape[0] >= min_candidates:
            distinct = _distinct(hits)
            if probes >= limit or distinct.shape[0] >= min_candidates:
                return distinct, int(hits.shape[0]), probes
        probes = min(limit, max(1, 2 * probes))


class ExactIndex:
    """Sequential scan: every query computes the cosine with every item (the paper's baseline).

    Args:
        block_size: rows scored per matrix product (see :func:`~indexing.lsh.scan.cosine_top_k`).
    """

    def __init__(self, *, block_size: int = 65536) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self._matrix: np.ndarray | None = None
        self._ids = np.empty(0, dtype=np.int64)

    def fit(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> ExactIndex:
        """Index a collection.

        Args:
            vectors: ``(n, dim)`` features; normalised here unless already unit float32 (then shared,
                not copied).
            ids: int64 ``(n,)`` distinct item ids; defaults to row numbers.

        Returns:
            ``self``.

        Raises:
            ValueError: on mismatched shapes, duplicate ids or non-finite values.
        """
        self._matrix = as_unit_float32(vectors)
        self._ids = _as_ids(ids, self._matrix.shape[0])
        return self

    @property
    def size(self) -> int:
        """Number of indexed items."""
        return self._ids.shape[0]

    def query(self, vector: np.ndarray, top_k: int = 10) -> QueryResult:
        """Exact top-k by cosine similarity.

        Args:
            vector: query ``(dim,)``; normalised here.
            top_k: number of results, ``>= 1``.

        Returns:
            The :class:`QueryResult`; ``candidates`` equals the collection size.

        Raises:
            RuntimeError: if called before :meth:`fit`.
            ValueError: on a query of the wrong shape or a non-positive ``top_k``.
        """
        if self._matrix is None:
            raise RuntimeError("ExactIndex.query() called before fit()")
        query = _as_query(vector, self._matrix.shape[1])
        rows, scores = cosine_top_k(self._matrix, query, top_k, block_size=self.block_size)
        return QueryResult(
            ids=self._ids[rows[0]], scores=scores[0], candidates=self.size, candidates_with_repeats=self.size
        )


class LshIndex:
    """LSH index: candidates from the query's buckets, re-ranked by exact cosine similarity.

    Vectors are L2-normalised before hashing, so a family's ``center`` must be fitted on normalised
    vectors (``fit_center(normalize(vectors))``).

    Args:
        family: the hash family (:class:`~indexing.lsh.hashing.SimHashFamily` or
            :class:`~indexing.lsh.hashing.PStableFamily`).
        store: where buckets live; a fresh :class:`~indexing.lsh.store.InMemoryBucketStore` by default.
    """

    def __init__(self, family: HashFamily, store: BucketStore | None = None) -> None:
        self.family = family
        self.store: BucketStore = store if store is not None else InMemoryBucketStore()
        self._matrix: np.ndarray | None = None
        self._id_map = _IdMap(np.empty(0, dtype=np.int64))
        self.bucket_keys: np.ndarray | None = None

    def fit(self, vectors: np.ndarray, ids: np.ndarray | None = None, *, add_to_store: bool = True) -> LshIndex:
        """Index a collection: hash every vector and put it in its ``num_tables`` buckets.

        Args:
            vectors: ``(n, dim)`` features; normalised here unless already unit float32 (then shared,
                not copied).
            ids: int64 ``(n,)`` distinct item ids; defaults to row numbers.
            add_to_store: ``False`` when the store already holds these buckets (an index loaded
                from the database): only the vectors for re-ranking are attached.

        Returns:
            ``self``. After a fit with ``add_to_store``, :attr:`bucket_keys` holds the ``(n, num_tables)``
            keys (for :func:`~indexing.lsh.stats.bucket_stats`).

        Raises:
            ValueError: on mismatched shapes, duplicate ids or non-finite values.
        """
        matrix = as_unit_float32(vectors)
        if matrix.shape[1] != self.family.dim:
            raise ValueError(f"vectors must have shape (n, {self.family.dim}), got shape {matrix.shape}")
        item_ids = _as_ids(ids, matrix.shape[0])
        if add_to_store:
            keys = self.family.keys(matrix)
            for table in range(self.family.num_tables):
                self.store.add_many(table, keys[:, table], item_ids)
            self.bucket_keys = keys
        self._matrix = matrix
        self._id_map = _IdMap(item_ids)
        return self

    @property
    def size(self) -> int:
        """Number of items whose vectors are attached for re-ranking."""
        return self._id_map.ids.shape[0]

    def candidates(
        self,
        vector: np.ndarray,
        probes: int = 0,
        min_candidates: int = 0,
        *,
        lookup: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Candidates:
        """The ids in a query's buckets (no re-rank): what a served search filters and re-ranks itself.

        Args:
            vector: query ``(dim,)``, already normalised.
            probes: extra buckets per table (multi-probe); ``0`` looks up the ``num_tables`` home buckets.
            min_candidates: probe further (:func:`probe_until`) while fewer distinct ids than this turned up.
            lookup: stands in for ``store.lookup`` (a caller timing the lookups wraps it); the store's by default.

        Raises:
            ValueError: on negative ``probes``.
        """
        if probes < 0:
            raise ValueError(f"probes must be >= 0, got {probes}")
        ids, repeats, used = probe_until(
            self.family, vector, lookup or self.store.lookup, probes=probes, min_candidates=min_candidates
        )
        return Candidates(
            ids=ids,
            with_repeats=repeats,
            probes=used,
            buckets_probed=self.family.num_tables * (1 + used),
        )

    def query(self, vector: np.ndarray, top_k: int = 10, probes: int = 0, min_candidates: int = 0) -> QueryResult:
        """Approximate top-k: look up the query's buckets, re-rank their members exactly.

        Args:
            vector: query ``(dim,)``; normalised here.
            top_k: number of results, ``>= 1``; fewer when the buckets hold fewer items.
            probes: extra buckets per table (multi-probe); ``0`` is the paper's plain LSH, which
                looks up exactly the ``num_tables`` home buckets.
            min_candidates: probe further (:func:`probe_until`) while fewer distinct items than this
                (at most the index's size) turned up; ``0`` looks up once.

        Returns:
            The :class:`QueryResult`. Ids the store returns but that were not fitted are skipped.

        Raises:
            RuntimeError: if called before :meth:`fit`.
            ValueError: on a query of the wrong shape, a non-positive ``top_k`` or negative ``probes``.
        """
        if self._matrix is None:
            raise RuntimeError("LshIndex.query() called before fit()")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        query = _as_query(vector, self._matrix.shape[1])
        found = self.candidates(query, probes, min(min_candidates, self.size))
        rows = self._id_map.rows(found.ids)
        top_rows, scores = rerank(self._matrix, rows, query, top_k)
        return QueryResult(
            ids=self._id_map.ids[top_rows],
            scores=scores,
            candidates=int(rows.shape[0]),
            candidates_with_repeats=found.with_repeats,
            buckets_probed=found.buckets_probed,
        )
