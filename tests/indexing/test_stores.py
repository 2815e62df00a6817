from __future__ import annotations

import importlib

import numpy as np
import pytest
from django.apps import apps as django_apps

from indexing import stores
from indexing.lsh.store import InMemoryBucketStore
from indexing.models import Bucket, BucketEntry
from indexing.stores import OrmBucketStore, bucket_entries_write, buckets_write

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


def _stored_buckets() -> dict[tuple[int, int], list[int]]:
    return {
        (bucket.table_id, bucket.key): np.frombuffer(bytes(bucket.ids), dtype=">i8").tolist()
        for bucket in Bucket.objects.all()
    }


def test_buckets_write_packs_runs_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks of 5 entries: most chunks end mid-way, and the 12-id bucket is larger than a chunk.
    monkeypatch.setattr(stores, "_COPY_CHUNK", 5)
    monkeypatch.setattr(stores, "_BULK_CHUNK", 2)
    rng = np.random.default_rng(3)
    sizes = [1, 12, 3, 1, 7, 2, 5]
    keys = np.repeat(np.array([-(1 << 63), -5, 0, 9, (1 << 63) - 1, 4, 6], dtype=np.int64), sizes)
    tables = np.repeat(np.array([1, 1, 1, 1, 1, 2, 2], dtype=np.int64), sizes)
    ids = np.concatenate([np.sort(rng.choice(1 << 40, size, replace=False)) for size in sizes]).astype(np.int64)
    assert buckets_write(tables, keys, ids) == len(sizes)
    expected: dict[tuple[int, int], list[int]] = {}
    for table, key, image in zip(tables.tolist(), keys.tolist(), ids.tolist(), strict=True):
        expected.setdefault((table, key), []).append(image)
    assert _stored_buckets() == expected
    assert {(b.table_id, b.key): b.size for b in Bucket.objects.all()} == {k: len(v) for k, v in expected.items()}


def test_buckets_write_refuses_unsorted_entries_and_writes_nothing() -> None:
    with pytest.raises(ValueError, match="sorted"):
        buckets_write(np.array([1, 1, 1]), np.array([5, 4, 5]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="shapes differ"):
        buckets_write(np.array([1, 1]), np.array([5]), np.array([1, 2]))
    assert not Bucket.objects.exists()
    assert buckets_write(np.empty(0), np.empty(0), np.empty(0)) == 0


def test_migration_0005_packs_the_entries_already_stored() -> None:
    migration = importlib.import_module("indexing.migrations.0005_bucket")
    bucket_entries_write(np.array([7, 7, 7, 8]), np.array([3, 3, -1, 3]), np.array([10, 11, 12, 10]))
    migration.pack_existing_entries(django_apps, None)
    assert _stored_buckets() == {(7, -1): [12], (7, 3): [10, 11], (8, 3): [10]}
    assert BucketEntry.objects.count() == 4
