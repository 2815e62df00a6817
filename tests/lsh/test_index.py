from __future__ import annotations

import numpy as np
import pytest

from indexing.lsh import index as index_module
from indexing.lsh.hashing import PStableFamily, SimHashFamily, fit_center, make_family
from indexing.lsh.index import ExactIndex, LshIndex
from indexing.lsh.scan import normalize
from indexing.lsh.store import InMemoryBucketStore


def _clustered(seed: int, n: int = 300, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, dim))
    return normalize(np.maximum(centers[rng.integers(0, 6, n)] + 0.5 * rng.standard_normal((n, dim)), 0.0))


def _members(keys: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Rows found in any of the probed buckets: keys (n, tables), probe (tables, m)."""
    found = np.zeros(keys.shape[0], dtype=bool)
    for table in range(keys.shape[1]):
        found |= np.isin(keys[:, table], probe[table])
    return np.flatnonzero(found)


@pytest.mark.parametrize("name", ["binary", "real"])
def test_plain_query_reranks_exactly_the_union_of_the_home_buckets(name: str) -> None:
    vectors = _clustered(0)
    family = make_family(name, 16, num_tables=3, hashes_per_table=6, w=0.5, seed=1, center=fit_center(vectors))
    index = LshIndex(family).fit(vectors)
    query = vectors[7] + 0.05
    keys = family.keys(vectors)
    home = family.probe_keys(normalize(query))

    result = index.query(query, top_k=5)

    union = _members(keys, home)
    assert result.candidates == union.shape[0]
    assert result.candidates_with_repeats == sum(int(np.sum(keys[:, t] == home[t, 0])) for t in range(3))
    assert result.buckets_probed == 3
    expected = union[np.argsort(-(vectors[union] @ normalize(query)), kind="stable")][:5]
    np.testing.assert_array_equal(result.ids, expected)


@pytest.mark.parametrize("name", ["binary", "real"])
def test_multi_probe_reranks_a_superset_of_the_home_buckets(name: str) -> None:
    vectors = _clustered(1)
    family = make_family(name, 16, num_tables=2, hashes_per_table=8, w=2.0, seed=2, center=fit_center(vectors))
    index = LshIndex(family).fit(vectors)
    query = normalize(vectors[3] + 0.1)
    keys = family.keys(vectors)

    plain = index.query(query, top_k=10)
    probed = index.query(query, top_k=10, probes=6)

    home_members = _members(keys, family.probe_keys(query))
    probed_members = _members(keys, family.probe_keys(query, probes=6))
    assert set(home_members) <= set(probed_members)
    assert probed.candidates == probed_members.shape[0] >= plain.candidates
    assert probed.buckets_probed == 2 * 7
    assert 0 < plain.candidates < probed.candidates
    assert probed.scores[0] >= plain.scores[0]


def test_query_of_an_indexed_vector_returns_it_first() -> None:
    vectors = _clustered(2)
    ids = np.arange(1000, 1300)[::-1].copy()  # ids that are not row numbers
    index = LshIndex(SimHashFamily(16, num_tables=4, hashes_per_table=6, center=fit_center(vectors))).fit(vectors, ids)
    result = index.query(vectors[42], top_k=3)
    assert result.ids[0] == ids[42]
    assert result.scores[0] == pytest.approx(1.0)


def test_index_loaded_from_a_populated_store_skips_the_inserts() -> None:
    vectors = _clustered(3)
    family = PStableFamily(16, num_tables=3, hashes_per_table=4, w=0.5, seed=4)
    built = LshIndex(family).fit(vectors)
    store = built.store
    loaded = LshIndex(family, store=store).fit(vectors, add_to_store=False)
    assert loaded.bucket_keys is None
    assert isinstance(store, InMemoryBucketStore)
    assert int(store.bucket_sizes(0).sum()) == vectors.shape[0]  # not inserted twice
    first = built.query(vectors[5], top_k=4, probes=2)
    second = loaded.query(vectors[5], top_k=4, probes=2)
    np.testing.assert_array_equal(first.ids, second.ids)


def test_lsh_with_every_bucket_probed_equals_the_exact_scan() -> None:
    vectors = _clustered(4)
    family = SimHashFamily(16, num_tables=1, hashes_per_table=4, seed=5)
    lsh = LshIndex(family).fit(vectors)
    exact = ExactIndex().fit(vectors)
    query = vectors[0] - vectors[1]
    all_buckets = lsh.query(query, top_k=10, probes=15)
    truth = exact.query(query, top_k=10)
    np.testing.assert_array_equal(all_buckets.ids, truth.ids)
    assert all_buckets.candidates == truth.candidates == vectors.shape[0]


def test_exact_index_counts_every_item_as_a_candidate() -> None:
    vectors = _clustered(5)
    result = ExactIndex(block_size=64).fit(vectors).query(vectors[9], top_k=2)
    assert result.ids[0] == 9
    assert result.candidates == result.candidates_with_repeats == 300


def test_indexes_reject_bad_input() -> None:
    family = SimHashFamily(16, num_tables=1, hashes_per_table=4)
    with pytest.raises(RuntimeError, match="before fit"):
        LshIndex(family).query(np.ones(16))
    with pytest.raises(ValueError, match=r"shape \(n, 16\)"):
        LshIndex(family).fit(np.ones((3, 8)))
    with pytest.raises(ValueError, match="distinct"):
        ExactIndex().fit(np.ones((2, 4)), np.array([1, 1]))
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        LshIndex(family).fit(np.ones((2, 16))).query(np.ones(16), top_k=0)


def test_ids_in_the_store_but_not_fitted_are_skipped() -> None:
    vectors = _clustered(6)
    family = SimHashFamily(16, num_tables=2, hashes_per_table=3, seed=7)
    store = InMemoryBucketStore()
    index = LshIndex(family, store=store).fit(vectors[:200])
    keys = family.keys(vectors[200:])
    for table in range(2):
        store.add_many(table, keys[:, table], np.arange(200, 300))  # added by another process, not loaded here
    result = index.query(vectors[250], top_k=5, probes=7)
    assert result.candidates == 200  # every bucket probed, only the fitted items scored
    assert result.candidates_with_repeats == 2 * 300
    assert set(result.ids.tolist()) <= set(range(200))


def test_candidates_are_the_distinct_ids_of_the_probed_buckets() -> None:
    rng = np.random.default_rng(7)
    vectors = normalize(rng.standard_normal((300, 16)).astype(np.float32))
    family = make_family("binary", 16, num_tables=5, hashes_per_table=6, seed=1)
    index = LshIndex(family).fit(vectors, ids=np.arange(300) + 1000)
    query = vectors[4]
    found = index.candidates(query, probes=3)
    keys = family.probe_keys(query, 3)
    oracle = set()
    repeats = 0
    for table in range(5):
        for key in keys[table]:
            members = index.store.lookup(np.array([[table, key]]))
            repeats += members.shape[0]
            oracle |= set(members.tolist())
    assert found.ids.tolist() == sorted(oracle)
    assert found.with_repeats == repeats
    assert found.probes == 3
    assert found.buckets_probed == 5 * 4
    result = index.query(query, top_k=5, probes=3)
    assert result.candidates == found.ids.shape[0]
    assert result.ids[0] == 1004
    more = index.candidates(query, probes=0, min_candidates=250)
    assert more.ids.shape[0] >= 250 or more.probes == family.max_probes
    with pytest.raises(ValueError, match="probes"):
        index.candidates(query, probes=-1)


@pytest.mark.parametrize("span", [50, 10**12])  # dense ids: the mask; ids far apart: the sort
def test_distinct_equals_numpy_unique_for_dense_and_sparse_ids(span: int) -> None:
    rng = np.random.default_rng(span % 97)
    ids = rng.integers(-(span // 2), span // 2, size=400, dtype=np.int64)
    np.testing.assert_array_equal(index_module._distinct(ids), np.unique(ids))
    assert index_module._distinct(ids).dtype == np.int64
    for tiny in (np.empty(0, dtype=np.int64), np.array([7])):
        np.testing.assert_array_equal(index_module._distinct(tiny), tiny)
