from __future__ import annotations

import numpy as np
import pytest

from indexing.lsh.store import InMemoryBucketStore
from indexing.stores import OrmBucketStore

pytestmark = pytest.mark.django_db

TABLE_IDS = [41, 7, 1003]  # HashTable ids of table numbers 0, 1, 2 (no FK constraint on the bucket rows)


def _stores(rng: np.random.Generator, items: int = 300) -> tuple[OrmBucketStore, InMemoryBucketStore, np.ndarray]:
    """The same buckets in the database and in memory; ids beyond 32 bits, negative and 64-bit-wide keys."""
    database, memory = OrmBucketStore(TABLE_IDS), InMemoryBucketStore()
    ids = rng.choice(np.arange(1, 10 * items), items, replace=False).astype(np.int64) + (1 << 33)
    palette = np.array([0, -1, 5, 17, -(1 << 62), (1 << 63) - 1, 123456789012, -42], dtype=np.int64)
    for table in range(len(TABLE_IDS)):
        keys = palette[rng.integers(0, palette.shape[0], items)]
        database.add_many(table, keys, ids)
        memory.add_many(table, keys, ids)
    return database, memory, palette


def test_lookup_returns_the_in_memory_ids_with_their_repeats() -> None:
    rng = np.random.default_rng(0)
    database, memory, palette = _stores(rng)
    for _ in range(20):
        count = int(rng.integers(1, 30))
        # Repeated pairs (looked up once), keys no bucket has, every table.
        keys = np.concatenate([palette, [3, 4, -5]])[rng.integers(0, palette.shape[0] + 3, count)]
        pairs = np.column_stack([rng.integers(0, len(TABLE_IDS), count), keys])
        expected = memory.lookup(pairs)
        found = database.lookup(pairs)
        assert found.dtype == np.int64
        assert np.array_equal(np.sort(found), np.sort(expected))
        assert np.array_equal(database.candidates(pairs), memory.candidates(pairs))


def test_lookup_of_nothing_and_of_empty_buckets_is_empty() -> None:
    database, _, _ = _stores(np.random.default_rng(1))
    assert database.lookup(np.empty((0, 2), dtype=np.int64)).tolist() == []
    missing = database.lookup(np.array([[0, 3], [1, 4], [2, 3]]))
    assert missing.dtype == np.int64
    assert missing.tolist() == []


def test_an_id_in_several_tables_comes_back_once_per_table() -> None:
    database = OrmBucketStore(TABLE_IDS)
    for table in range(len(TABLE_IDS)):
        database.add_many(table, np.array([9, 9]), np.array([1, 2]))
    pairs = np.array([[0, 9], [1, 9], [2, 9], [2, 9], [1, 8]])
    assert sorted(database.lookup(pairs).tolist()) == [1, 1, 1, 2, 2, 2]
    assert database.candidates(pairs).tolist() == [1, 2]
