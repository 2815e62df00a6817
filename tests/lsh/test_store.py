from __future__ import annotations

import numpy as np
import pytest

from indexing.lsh.store import BucketStore, InMemoryBucketStore


def _store() -> InMemoryBucketStore:
    store = InMemoryBucketStore()
    store.add_many(0, np.array([5, 7, 5, -3]), np.array([10, 11, 12, 13]))
    store.add_many(1, np.array([5, 5]), np.array([10, 11]))
    store.add_many(0, np.array([7]), np.array([14]))  # a later batch into an existing bucket
    return store


def test_lookup_returns_ids_once_per_bucket_that_holds_them() -> None:
    hits = _store().lookup(np.array([[0, 5], [1, 5], [0, -3]]))
    assert sorted(hits.tolist()) == [10, 10, 11, 12, 13]


def test_lookup_ignores_unknown_buckets_and_repeated_pairs() -> None:
    store = _store()
    assert sorted(store.lookup([(0, 7), (0, 7), (0, 99), (4, 5)]).tolist()) == [11, 14]
    assert store.lookup(np.empty((0, 2), dtype=np.int64)).shape == (0,)


def test_candidates_are_distinct_and_sorted() -> None:
    store = _store()
    assert store.candidates([(0, 5), (1, 5), (0, 7)]).tolist() == [10, 11, 12, 14]
    assert store.bucket_sizes(0).tolist() == [1, 2, 2]  # keys -3, 5, 7
    assert store.tables == [0, 1]


def test_in_memory_store_satisfies_the_protocol() -> None:
    store: BucketStore = InMemoryBucketStore()  # checked by mypy
    store.add_many(3, np.array([1]), np.array([2]))
    assert store.lookup(np.array([[3, 1]])).tolist() == [2]


def test_empty_inserts_leave_an_empty_table() -> None:
    store = InMemoryBucketStore()
    store.add_many(2, np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert store.lookup(np.array([[2, 0]])).shape == (0,)
    assert store.bucket_sizes(2).shape == (0,)


def test_add_many_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        InMemoryBucketStore().add_many(0, np.array([1, 2]), np.array([1]))
