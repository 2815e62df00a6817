from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.lsh import scan
from indexing.lsh.scan import as_unit_float32, cosine_top_k, look_tie_break, normalize, rerank, row_scores


def _brute_force(matrix: np.ndarray, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ matrix.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    return rows, np.take_along_axis(scores, rows, axis=1)


@pytest.mark.parametrize("block_size", [1, 37, 65536])
def test_scan_equals_brute_force_argsort(block_size: int) -> None:
    rng = np.random.default_rng(0)
    matrix = normalize(rng.standard_normal((300, 16)))
    queries = normalize(rng.standard_normal((7, 16)))
    rows, scores = cosine_top_k(matrix, queries, 10, block_size=block_size)
    expected_rows, expected_scores = _brute_force(matrix, queries, 10)

    assert rows.dtype == np.int64
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_scan_returns_whole_collection_when_top_k_exceeds_it() -> None:
    matrix = normalize(np.random.default_rng(1).standard_normal((4, 3)))
    rows, scores = cosine_top_k(matrix, matrix[2], 10)
    assert rows.shape == (1, 4)
    assert rows[0, 0] == 2
    assert scores[0, 0] == pytest.approx(1.0)


def test_scan_breaks_ties_by_row() -> None:
    matrix = normalize(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]))
    rows, _ = cosine_top_k(matrix, np.array([1.0, 0.0]), 3, block_size=2)
    assert rows.tolist() == [[0, 2, 3]]


def test_rerank_orders_candidates_by_cosine() -> None:
    rng = np.random.default_rng(2)
    matrix = normalize(rng.standard_normal((50, 8)))
    candidates = np.array([3, 17, 42, 8, 29])
    rows, scores = rerank(matrix, candidates, matrix[42], 3)
    expected = candidates[np.argsort(-(matrix[candidates] @ matrix[42]))][:3]
    np.testing.assert_array_equal(rows, expected)
    assert rows[0] == 42
    assert scores[0] == pytest.approx(1.0)
    assert rerank(matrix, np.array([], dtype=np.int64), matrix[0], 3)[0].shape == (0,)


def test_normalize_keeps_zero_vectors_zero() -> None:
    vectors = normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 0.0]])


def test_as_unit_float32_shares_normalised_arrays_and_copies_the_rest() -> None:
    unit = normalize(np.random.default_rng(3).standard_normal((5, 4)))
    assert as_unit_float32(unit) is unit
    raw = unit * 2.0
    normalised = as_unit_float32(raw)
    assert normalised is not raw
    np.testing.assert_allclose(normalised, unit, atol=1e-6)


def test_scan_rejects_bad_arguments() -> None:
    matrix = normalize(np.ones((3, 2)))
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        cosine_top_k(matrix, matrix, 0)
    with pytest.raises(ValueError, match="must agree"):
        cosine_top_k(matrix, np.ones((1, 3)), 1)
    with pytest.raises(ValueError, match="NaN"):
        normalize(np.array([np.nan, 1.0]))


@pytest.mark.parametrize("gather_bytes", [1, 3 * 8 * 4, 1 << 20])  # one row, three rows, everything at once
def test_row_scores_equal_the_gathered_product(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gather_bytes: int
) -> None:
    monkeypatch.setattr(scan, "GATHER_BYTES", gather_bytes)
    rng = np.random.default_rng(3)
    matrix = normalize(rng.standard_normal((50, 8)))
    np.save(tmp_path / "m.npy", matrix)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r")
    query = normalize(rng.standard_normal(8))
    rows = np.array([7, 3, 3, 49, 0, 12, 8, 9, 10, 11])  # any order, repeats allowed
    for source in (matrix, mapped):
        np.testing.assert_allclose(row_scores(source, rows, query), matrix[rows] @ query, rtol=1e-6, atol=1e-7)
    assert row_scores(mapped, np.empty(0, dtype=np.int64), query).shape == (0,)
    as_float64 = matrix.astype(np.float64)
    np.testing.assert_allclose(row_scores(as_float64, rows, query), matrix[rows] @ query, rtol=1e-6, atol=1e-7)
    compact = rng.integers(-127, 128, size=(50, 8)).astype(np.int8)  # the int8 copy: scored in its own units
    np.save(tmp_path / "c.npy", compact)
    for source in (compact, np.load(tmp_path / "c.npy", mmap_mode="r")):
        expected = compact[rows].astype(np.float64) @ query
        np.testing.assert_allclose(row_scores(source, rows, query), expected, rtol=1e-5, atol=1e-4)


def test_look_tie_break_equals_sorting_by_the_blend() -> None:
    rng = np.random.default_rng(3)
    ids = rng.permutation(200).astype(np.int64)
    scores = rng.uniform(0.9, 1.0, 200).astype(np.float32)
    scores[:50] = 0.999  # exact ties
    looks = rng.uniform(0.0, 1.0, 200).astype(np.float32)
    looks[::17] = np.nan  # no second vector

    got_ids, got_scores = look_tie_break(ids, scores, looks, 0.05)

    # Oracle: Python's sort on (-blend, id), the blend written out per hit in float64.
    blend = {
        int(i): float(s) if np.isnan(lk) else 0.95 * float(s) + 0.05 * float(lk)
        for i, s, lk in zip(ids, scores, looks, strict=True)
    }
    expected = sorted(blend, key=lambda i: (-blend[i], i))
    assert got_ids.tolist() == expected
    np.testing.assert_allclose(got_scores, [blend[i] for i in expected], atol=1e-6)


def test_look_tie_break_orders_near_ties_only() -> None:
    ids = np.array([1, 2, 3, 4])
    scores = np.array([1.0, 0.999, 0.998, 0.7])
    looks = np.array([0.2, 0.9, 0.5, 1.0])

    got_ids, _ = look_tie_break(ids, scores, looks, 0.02)
    plain_ids, plain_scores = look_tie_break(ids, scores, looks, 0.0)

    assert got_ids.tolist() == [2, 3, 1, 4]  # the three near-ties by look; 0.7 stays last whatever its look
    assert plain_ids.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(plain_scores, scores.astype(np.float32))


@pytest.mark.parametrize(
    ("lengths", "weight", "message"),
    [((3, 3, 2), 0.1, "one length"), ((2, 2, 2), 1.0, r"\[0, 1\)"), ((2, 2, 2), -0.1, r"\[0, 1\)")],
)
def test_look_tie_break_rejects_bad_arguments(lengths: tuple[int, int, int], weight: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        look_tie_break(np.arange(lengths[0]), np.ones(lengths[1]), np.ones(lengths[2]), weight)
