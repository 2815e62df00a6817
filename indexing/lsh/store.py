"""Bucket storage for LSH indexes: the protocol and an in-memory implementation.

The index never knows where buckets live (STYLE.md G2): it hands a store ``(table, key) -> item ids``
entries to keep and asks it for the ids in a set of buckets. :class:`InMemoryBucketStore` serves
benchmarks and tests; the Django side implements the same protocol on top of the ``BucketEntry``
table (``WHERE (table, key) IN (...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["BucketStore", "InMemoryBucketStore", "as_pairs"]


def as_pairs(pairs: np.ndarray | Sequence[tuple[int, int]]) -> np.ndarray:
    """Normalise bucket addresses to an int64 array of ``(table, key)`` rows.

    Args:
        pairs: array-like of shape ``(p, 2)``; ``p`` may be 0.

    Returns:
        int64 array of shape ``(p, 2)``.

    Raises:
        ValueError: if the input does not have two columns.
    """
    array = np.asarray(pairs, dtype=np.int64)
    if array.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"pairs must have shape (p, 2), got shape {array.shape}")
    return array


class BucketStore(Protocol):
    """Where an LSH index keeps its buckets: one entry per (table, key, item id)."""

    def add_many(self, table: int, keys: np.ndarray, item_ids: np.ndarray) -> None:
        """Put item ``item_ids[j]`` into bucket ``(table, keys[j])`` for every ``j``.

        Args:
            table: table number.
            keys: int64 array ``(n,)`` of bucket keys.
            item_ids: int64 array ``(n,)`` of item ids, each at most once per table.
        """
        ...

    def lookup(self, pairs: np.ndarray) -> np.ndarray:
        """Return the ids in the given buckets, once per bucket that holds them.

        Args:
            pairs: int64 array ``(p, 2)`` of distinct ``(table, key)`` bucket addresses.

        Returns:
            int64 array of ids *with repeats*: an item in two of the buckets appears twice. Its length is
            the number of distance computations of the paper's plain LSH (re-rank every bucket member);
            ``np.unique`` of it gives the candidates actually re-ranked.
        """
        ...


@dataclass
class _Table:
    """One table in compressed-sparse-row form: keys sorted, ids grouped by key."""

    keys: np.ndarray  # (b,) int64, sorted, distinct
    starts: np.ndarray  # (b + 1,) int64: ids of keys[i] are ids[starts[i]:starts[i + 1]]
    ids: np.ndarray  # (entries,) int64


_EMPTY_TABLE = _Table(
    keys=np.empty(0, dtype=np.int64), starts=np.zeros(1, dtype=np.int64), ids=np.empty(0, dtype=np.int64)
)


class InMemoryBucketStore:
    """Buckets in NumPy arrays, one sorted key array per table.

    A sorted array plus offsets (rather than a ``dict`` of small arrays) keeps a million-item index
    with millions of singleton buckets at most 24 bytes per entry (id, key, offset), where a ``dict``
    of arrays would pay about 100 bytes of object overhead per bucket. ``add_many`` only queues its input;
    the table is (re)sorted on the next lookup, so batched inserts cost one sort, not one per batch.
    """

    def __init__(self) -> None:
        self._tables: dict[int, _Table] = {}
        self._pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}

    def add_many(self, table: int, keys: np.ndarray, item_ids: np.ndarray) -> None:
        """Put item ``item_ids[j]`` into bucket ``(table, keys[j])`` for every ``j``.

        Args:
            table: non-negative table number.
            keys: int64 array ``(n,)`` of bucket keys.
            item_ids: int64 array ``(n,)`` of item ids.

        Raises:
            ValueError: on a negative table or arrays of different shapes.
        """
        if table < 0:
            raise ValueError(f"table must be >= 0, got {table}")
        keys = np.asarray(keys, dtype=np.int64).ravel()
        item_ids = np.asarray(item_ids, dtype=np.int64).ravel()
        if keys.shape != item_ids.shape:
            raise ValueError(
                f"keys and item_ids must have the same length, got {keys.shape[0]} and {item_ids.shape[0]}"
            )
        self._pending.setdefault(table, []).append((keys.copy(), item_ids.copy()))

    def _table(self, table: int) -> _Table:
        pending = self._pending.pop(table, None)
        if pending:
            current = self._tables.get(table, _EMPTY_TABLE)
            old_keys = np.repeat(current.keys, np.diff(current.starts))
            keys = np.concatenate([old_keys, *(chunk_keys for chunk_keys, _ in pending)])
            ids = np.concatenate([current.ids, *(chunk_ids for _, chunk_ids in pending)])
            order = np.argsort(keys, kind="stable")  # stable: ids keep insertion order inside a bucket
            keys, ids = keys[order], ids[order]
            if keys.shape[0] == 0:
                return self._tables.setdefault(table, _EMPTY_TABLE)
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))  # first entry of each bucket
            self._tables[table] = _Table(keys=keys[starts], starts=np.append(starts, keys.shape[0]), ids=ids)
        return self._tables.get(table, _EMPTY_TABLE)

    def compact(self) -> None:
        """Sort every queued insert into its table now instead of on the next lookup."""
        for table in list(self._pending):
            self._table(table)

    @property
    def tables(self) -> list[int]:
        """Table numbers that hold (or will hold) entries, ascending."""
        return sorted(set(self._tables) | set(self._pending))

    def bucket_sizes(self, table: int) -> np.ndarray:
        """Sizes of every bucket of one table, in key order (int64 array)."""
        return np.diff(self._table(table).starts)

    def lookup(self, pairs: np.ndarray | Sequence[tuple[int, int]]) -> np.ndarray:
        """Return the ids in the given buckets, once per bucket that holds them.

        Args:
            pairs: ``(p, 2)`` array-like of ``(table, key)``; a repeated pair is looked up once and
                unknown tables or keys hold nothing.

        Returns:
            int64 array of ids with repeats across buckets (see :meth:`BucketStore.lookup`).
        """
        pairs = as_pairs(pairs)
        chunks: list[np.ndarray] = []
        for table in np.unique(pairs[:, 0]).tolist():
            stored = self._table(table)
            if stored.keys.shape[0] == 0:
                continue
            wanted = np.unique(pairs[pairs[:, 0] == table, 1])
            position = np.minimum(np.searchsorted(stored.keys, wanted), stored.keys.shape[0] - 1)
            found = position[stored.keys[position] == wanted]
            if found.shape[0] == 0:
                continue
            starts = stored.starts[found]
            lengths = stored.starts[found + 1] - starts
            # Gather the slices ids[start:start + length] in one vectorised step.
            offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
            chunks.append(stored.ids[offsets + np.arange(offsets.shape[0])])
        if not chunks:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(chunks)

    def candidates(self, pairs: np.ndarray | Sequence[tuple[int, int]]) -> np.ndarray:
        """Return the distinct ids in the given buckets, sorted ascending (int64 array)."""
        return np.unique(self.lookup(pairs))
