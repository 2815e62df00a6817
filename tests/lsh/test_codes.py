from __future__ import annotations

import numpy as np
import pytest

from indexing.lsh.codes import SignCodes, hamming, shortlist


def _bits(codes: np.ndarray) -> np.ndarray:
    """Oracle: the code words unpacked bit by bit (bit i of word w is hyperplane 64 w + i)."""
    return np.array([[(int(word) >> bit) & 1 for word in row for bit in range(64)] for row in codes], dtype=np.uint8)


def test_code_bits_are_the_signs_of_the_centred_projections() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((7, 16)).astype(np.float32)
    center = rng.standard_normal(16).astype(np.float32)
    coder = SignCodes.draw(16, bits=128, seed=3, center=center)
    codes = coder.encode(vectors)
    assert codes.shape == (7, 2)
    assert codes.dtype == np.uint64
    expected = ((vectors - center) @ coder.projections.T >= 0).astype(np.uint8)
    np.testing.assert_array_equal(_bits(codes), expected)


def test_hamming_counts_differing_bits() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2**63, size=(50, 4), dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, (50, 4)).astype(
        np.uint64
    )
    query = codes[3] ^ np.array([1, 0, 0, 2**63], dtype=np.uint64)
    distances = hamming(codes, query)
    oracle = (_bits(codes) != _bits(query[np.newaxis])).sum(axis=1)
    np.testing.assert_array_equal(distances, oracle)
    assert distances[3] == 2


def test_shortlist_keeps_the_nearest_codes_with_ties_by_position() -> None:
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 4, size=(200, 1), dtype=np.uint64)  # many ties: distances 0..2
    query = np.array([0], dtype=np.uint64)
    chosen = shortlist(codes, query, 30)
    distances = hamming(codes, query)
    oracle = np.sort(np.lexsort((np.arange(200), distances))[:30])
    np.testing.assert_array_equal(chosen, oracle)
    np.testing.assert_array_equal(shortlist(codes[:10], query, 30), np.arange(10))
    with pytest.raises(ValueError, match="keep"):
        shortlist(codes, query, 0)


def test_near_vectors_have_near_codes() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal((1, 64)).astype(np.float32)
    near = base + 0.05 * rng.standard_normal((1, 64)).astype(np.float32)
    far = rng.standard_normal((1, 64)).astype(np.float32)
    coder = SignCodes.draw(64, bits=256, seed=0)
    codes = coder.encode(np.concatenate([near, far]))
    distances = hamming(codes, coder.encode(base)[0])
    assert distances[0] < 30 < distances[1]


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="projections"):
        SignCodes(np.ones((100, 8), dtype=np.float32))
    coder = SignCodes.draw(8, bits=64)
    with pytest.raises(ValueError, match="vectors"):
        coder.encode(np.ones((2, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="codes"):
        hamming(np.ones((3, 2), dtype=np.uint64), np.ones(1, dtype=np.uint64))
