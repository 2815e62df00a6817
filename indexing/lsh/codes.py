"""Short binary codes for a cheap first filter before the exact float re-rank.

A search at a million images finds thousands of candidates in its buckets; re-ranking all of them reads thousands
of 4 KB float vectors. Each item also carries a ``bits``-bit sign code (SimHash: one bit per random hyperplane
through the collection's centre, Charikar 2002): the Hamming distance between two codes estimates the angle
between the vectors, so the candidates nearest by Hamming distance (a popcount of 32 bytes each, as FAISS's
``IndexBinaryMultiHash`` ranks its bucket hits) are the few hundred worth the exact cosine.

The projections are drawn once and stored with the codes (``projections``), so a process that encodes a new item
later agrees with the codes written at build time whatever NumPy's Gaussian sampler does across releases.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SignCodes", "hamming", "shortlist"]

DEFAULT_BITS = 256


class SignCodes:
    """``bits`` sign bits per vector, packed into ``bits // 64`` uint64 words.

    Args:
        projections: float32 ``(bits, dim)`` hyperplane normals; ``bits`` a multiple of 64.
        center: float32 ``(dim,)`` subtracted before projecting (the index's centre), or None.
    """

    def __init__(self, projections: np.ndarray, center: np.ndarray | None = None) -> None:
        projections = np.ascontiguousarray(projections, dtype=np.float32)
        if projections.ndim != 2 or projections.shape[0] % 64 or projections.shape[0] == 0:
            raise ValueError(f"projections must have shape (64 * m, dim), got {projections.shape}")
        if center is not None and np.asarray(center).shape != (projections.shape[1],):
            raise ValueError(f"center must have shape ({projections.shape[1]},), got {np.asarray(center).shape}")
        self.projections = projections
        self.center = None if center is None else np.asarray(center, dtype=np.float32)

    @classmethod
    def draw(cls, dim: int, *, bits: int = DEFAULT_BITS, seed: int = 0, center: np.ndarray | None = None) -> SignCodes:
        """Fresh Gaussian hyperplanes (seeded)."""
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x636F6465,)))  # "code"
        return cls(rng.standard_normal((bits, dim), dtype=np.float32), center)

    @property
    def dim(self) -> int:
        """Dimensionality of the vectors encoded."""
        return int(self.projections.shape[1])

    @property
    def words(self) -> int:
        """uint64 words per code."""
        return self.projections.shape[0] // 64

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """uint64 ``(n, words)`` codes of ``(n, dim)`` vectors (bit ``i`` of the code: hyperplane ``i``)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.projections.shape[1]:
            raise ValueError(f"vectors must have shape (n, {self.projections.shape[1]}), got {vectors.shape}")
        if self.center is not None:
            vectors = vectors - self.center
        bits = (vectors @ self.projections.T) >= 0  # (n, bits)
        packed = np.packbits(bits, axis=1, bitorder="little")  # (n, bits / 8) bytes, little-endian within words
        return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def hamming(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances ``(n,)`` between each row of ``codes`` ``(n, words)`` and one ``query`` code ``(words,)``."""
    codes = np.asarray(codes, dtype=np.uint64)
    query = np.asarray(query, dtype=np.uint64).reshape(1, -1)
    if codes.ndim != 2 or codes.shape[1] != query.shape[1]:
        raise ValueError(f"codes must have shape (n, {query.shape[1]}), got {codes.shape}")
    return np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int64)


def shortlist(codes: np.ndarray, query: np.ndarray, keep: int) -> np.ndarray:
    """Positions of the ``keep`` rows of ``codes`` nearest ``query`` by Hamming distance (all rows if fewer).

    Ties at the cut are broken by position, so the result is deterministic. The positions come back ascending.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    count = np.asarray(codes).shape[0]
    if count <= keep:
        return np.arange(count, dtype=np.int64)
    distances = hamming(codes, query)
    # Sort key: distance first, position second (both fit an int64).
    chosen = np.argpartition(distances * count + np.arange(count), keep - 1)[:keep]
    return np.sort(chosen).astype(np.int64)
