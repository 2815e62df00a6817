"""What every LSH hash family shares: bucket-key encoding, centring, seeded tables, probing order, storage.

A family holds ``num_tables`` hash functions ``g_1 .. g_L``; each ``g`` concatenates ``hashes_per_table`` (the
paper's ``K``) elementary hashes, and the K values of one table are encoded into a single signed 64-bit bucket
key so that a bucket is one ``(table, key)`` pair, which fits a ``BigIntegerField`` and a composite B-tree index.
:class:`ProjectionFamily` is the base of the projection-based families (:mod:`indexing.lsh.simhash`,
:mod:`indexing.lsh.pstable`); :mod:`indexing.lsh.hashing` registers them.

Reproducibility: table ``t`` draws its parameters from
``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(t,)))`` (the ``t``-th child of
``SeedSequence(seed).spawn``), so adding tables never changes the earlier ones. Projections are computed
in float64, which keeps keys identical between processes and between a batch and a single query even
when BLAS sums in a different order (a float32 product can land on the other side of a slot boundary).
NumPy only promises bit-stable *bit generators*, not bit-stable Gaussian sampling across releases, so
the index stores every table's parameters (:meth:`ProjectionFamily.table_params`) and rebuilds from them
(``from_table_params``) instead of trusting the seed forever.

Optional centring: post-ReLU CNN features are all non-negative, so every vector lies in one orthant
and hyperplanes through the origin cut the data very unevenly. Subtracting a mean vector
(:func:`fit_center`, fitted on the indexed collection and stored with the index) before hashing
spreads the data over the buckets. Centring is part of the family, so index and queries always agree.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = [
    "MAX_SIMHASH_BITS",
    "HashFamily",
    "ProjectionFamily",
    "encode_hash_values",
    "fit_center",
    "pack_bits",
    "perturbation_masks",
    "table_rng",
]

_MIX_START = np.uint64(0xCBF29CE484222325)
_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_MUL_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_MUL_2 = np.uint64(0x94D049BB133111EB)

# Rows hashed per BLAS call: bounds the float64 temporaries to about 70 MB for dim=1024.
_KEYS_BLOCK_ROWS = 8192

MAX_SIMHASH_BITS = 63  # the packed key must stay a non-negative signed 64-bit integer


def encode_hash_values(values: np.ndarray) -> np.ndarray:
    """Mix the K integer hash values of each row into one signed 64-bit bucket key.

    The mixing is fixed and documented so that any process (or another language) can reproduce it:
    start from ``h = 0xCBF29CE484222325``; for each value ``v`` in order, reinterpret it as an unsigned
    64-bit integer and set ``h = fmix(h XOR v)`` where ``fmix`` is the splitmix64 output function
    ``z += 0x9E3779B97F4A7C15; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB;
    z ^= z>>31`` (all arithmetic modulo 2**64). The result is reinterpreted as a signed int64.

    Args:
        values: integer array of shape ``(..., K)``, ``K >= 1``.

    Returns:
        int64 array of shape ``values.shape[:-1]``.

    Raises:
        ValueError: if ``values`` has no last axis or it is empty.
    """
    values = np.asarray(values)
    if values.ndim < 1 or values.shape[-1] < 1:
        raise ValueError(f"values must have shape (..., K) with K >= 1, got shape {values.shape}")
    batch_shape = values.shape[:-1]
    # Work on a 2-D array: operations on 0-d uint64 arrays return scalars, which warn on overflow.
    unsigned = np.ascontiguousarray(values.reshape(-1, values.shape[-1]), dtype=np.int64).view(np.uint64)
    key = np.full(unsigned.shape[0], _MIX_START, dtype=np.uint64)
    for column in range(unsigned.shape[1]):
        z = (key ^ unsigned[:, column]) + _GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX_MUL_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_MUL_2
        key = z ^ (z >> np.uint64(31))
    return key.view(np.int64).reshape(batch_shape)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack the K SimHash bits of each row into a non-negative int64 key (bit ``i`` = hash ``i``).

    Args:
        bits: boolean or 0/1 array of shape ``(..., K)`` with ``1 <= K <= 63``.

    Returns:
        int64 array of shape ``bits.shape[:-1]``.

    Raises:
        ValueError: if K is outside ``[1, 63]``.
    """
    bits = np.asarray(bits)
    if bits.ndim < 1 or not 1 <= bits.shape[-1] <= MAX_SIMHASH_BITS:
        raise ValueError(f"bits must have shape (..., K) with 1 <= K <= 63, got shape {bits.shape}")
    weights = np.left_shift(np.int64(1), np.arange(bits.shape[-1], dtype=np.int64))
    return (bits.astype(np.int64) * weights).sum(axis=-1)


def fit_center(vectors: np.ndarray) -> np.ndarray:
    """Return the mean vector of a collection, to centre the data before hashing.

    Args:
        vectors: array of shape ``(n, dim)``, ``n >= 1``; pass the vectors exactly as they will be
            hashed (for cosine search: the L2-normalised features).

    Returns:
        float32 array of shape ``(dim,)`` (accumulated in float64; float32 so that it round-trips
        through the same little-endian float32 bytes as the stored features).

    Raises:
        ValueError: if ``vectors`` is not a non-empty 2-D array of finite values.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"vectors must have shape (n, dim) with n >= 1, got shape {vectors.shape}")
    center = vectors.mean(axis=0, dtype=np.float64)
    if not np.isfinite(center).all():
        raise ValueError("vectors contain NaN or infinite values")
    return center.astype(np.float32)


def table_rng(seed: int, table: int) -> np.random.Generator:
    """The random generator of table ``table``: the t-th child of ``SeedSequence(seed).spawn()``.

    Tables are independent and adding one changes no other.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(table,)))


def perturbation_masks(scores: Sequence[float], bits: Sequence[int]) -> Iterator[int]:
    """Yield every non-empty subset of ``range(len(scores))`` in increasing order of summed score.

    ``scores`` must be sorted ascending and non-negative. This is the shift/expand heap of Lv et al.
    (2007): each subset is generated exactly once and a child never scores less than its parent, so
    the heap pops subsets in score order. A subset is yielded as the sum of ``bits[position]`` over its
    positions; callers pass distinct powers of two, so the sum is a bit mask they can use directly.
    Heap entries are ``(score, last position, mask)``: plain numbers, cheap to push and compare.
    """
    size = len(scores)
    if size == 0:
        return
    heap: list[tuple[float, int, int]] = [(scores[0], 0, bits[0])]
    while heap:
        score, last, mask = heapq.heappop(heap)
        yield mask
        following = last + 1
        if following < size:
            # shift: replace the last position by the next one; expand: add the next one.
            heapq.heappush(
                heap, (score - scores[last] + scores[following], following, mask - bits[last] + bits[following])
            )
            heapq.heappush(heap, (score + scores[following], following, mask + bits[following]))


def _load_table_params(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


class HashFamily(Protocol):
    """What :class:`~indexing.lsh.index.LshIndex` and the Django services need from a hash family."""

    family: str
    dim: int
    num_tables: int
    hashes_per_table: int
    seed: int
    center: np.ndarray | None

    @property
    def max_probes(self) -> int:
        """Largest number of extra buckets :meth:`probe_keys` can return per table."""
        ...

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        """Bucket keys of a batch: ``(n, dim)`` -> ``(n, num_tables)`` int64."""
        ...

    def probe_keys(self, vector: np.ndarray, probes: int = 0) -> np.ndarray:
        """Home bucket plus ``probes`` extra buckets per table: ``(dim,)`` -> ``(num_tables, m)`` int64."""
        ...

    def table_params(self, table: int) -> bytes:
        """Serialised projection parameters of one table."""
        ...


class ProjectionFamily:
    """Shared machinery: parameters, validation, centred projection, serialisation."""

    family: str  # "binary" | "real", the value stored on an index row
    dim: int
    num_tables: int
    hashes_per_table: int
    seed: int
    center: np.ndarray | None
    _projections: np.ndarray  # (num_tables, hashes_per_table, dim) float64, read-only
    _matrix: np.ndarray  # (dim, num_tables * hashes_per_table) float64: all projections in one product
    _center_shift: np.ndarray | None  # center @ _matrix, subtracted instead of copying every centred row

    def _setup(
        self,
        projections: np.ndarray,
        *,
        seed: int,
        center: np.ndarray | None,
    ) -> None:
        num_tables, hashes_per_table, dim = projections.shape
        self.dim = dim
        self.num_tables = num_tables
        self.hashes_per_table = hashes_per_table
        self.seed = seed
        self._projections = np.ascontiguousarray(projections, dtype=np.float64)
        self._projections.setflags(write=False)
        self._matrix = np.ascontiguousarray(self._projections.reshape(-1, dim).T)
        if center is None:
            self.center = None
            self._center_shift = None
        else:
            center = np.asarray(center)
            if center.shape != (dim,):
                raise ValueError(f"center must have shape ({dim},), got shape {center.shape}")
            if not np.isfinite(center).all():
                raise ValueError("center contains NaN or infinite values")
            self.center = center.astype(np.float32)
            self.center.setflags(write=False)
            self._center_shift = self.center.astype(np.float64) @ self._matrix

    @staticmethod
    def _validate_common(dim: int, num_tables: int, hashes_per_table: int, seed: int, max_hashes: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if num_tables < 1:
            raise ValueError(f"num_tables must be >= 1, got {num_tables}")
        if not 1 <= hashes_per_table <= max_hashes:
            raise ValueError(f"hashes_per_table must be in [1, {max_hashes}], got {hashes_per_table}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")

    @property
    def projections(self) -> np.ndarray:
        """Read-only float64 array ``(num_tables, hashes_per_table, dim)``: the ``X_i`` / ``r`` vectors."""
        return self._projections

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got shape {vectors.shape}")
        return vectors

    def _project(self, block: np.ndarray) -> np.ndarray:
        """Centred projections of a block ``(b, dim)`` -> ``(b, num_tables, hashes_per_table)`` float64."""
        block = np.asarray(block, dtype=np.float64)
        if not np.isfinite(block).all():
            raise ValueError("vectors contain NaN or infinite values")
        projection = block @ self._matrix
        if self._center_shift is not None:
            projection -= self._center_shift  # (v - c) . X == v . X - c . X, without a centred copy of the data
        return projection.reshape(block.shape[0], self.num_tables, self.hashes_per_table)

    def _blockwise(self, vectors: np.ndarray, per_block: Callable[[np.ndarray], np.ndarray], out: np.ndarray) -> None:
        # Hash block by block so that a million vectors never need an (n, L*K) float64 temporary.
        for start in range(0, vectors.shape[0], _KEYS_BLOCK_ROWS):
            stop = min(start + _KEYS_BLOCK_ROWS, vectors.shape[0])
            out[start:stop] = per_block(self._project(vectors[start:stop]))

    def _project_one(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector)
        if vector.shape != (self.dim,):
            raise ValueError(f"vector must have shape ({self.dim},), got shape {vector.shape}")
        # Same code path as keys(): a query identical to an indexed vector lands in the same buckets.
        return self._project(vector[np.newaxis, :])[0]

    @staticmethod
    def _check_probes(probes: int) -> None:
        if probes < 0:
            raise ValueError(f"probes must be >= 0, got {probes}")

    def _check_table(self, table: int) -> None:
        if not 0 <= table < self.num_tables:
            raise ValueError(f"table must be in [0, {self.num_tables - 1}], got {table}")

    def _param_arrays(self, table: int) -> dict[str, np.ndarray]:
        return {
            "family": np.array(self.family),
            "table": np.array(table, dtype=np.int64),
            "seed": np.array(self.seed, dtype=np.int64),
            "projections": self._projections[table],
        }

    def table_params(self, table: int) -> bytes:
        """Serialise one table's parameters for storage in a database row.

        Args:
            table: table number in ``[0, num_tables)``.

        Returns:
            An uncompressed ``.npz`` archive (readable with ``np.load(..., allow_pickle=False)``) with the
            arrays ``family``, ``table``, ``seed``, ``projections`` ``(K, dim)`` float64 and, for the
            p-stable family, ``offsets`` ``(K,)`` float64 and ``w``.

        Raises:
            ValueError: if ``table`` is out of range.
        """
        self._check_table(table)
        buffer = io.BytesIO()
        arrays: dict[str, Any] = self._param_arrays(table)  # Any: numpy's stub types savez's **kwds loosely
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def _parse_tables(cls, tables: Sequence[bytes]) -> tuple[list[dict[str, np.ndarray]], int]:
        if len(tables) == 0:
            raise ValueError("tables must hold at least one table's parameters")
        parsed = [_load_table_params(blob) for blob in tables]
        seeds = {int(params["seed"]) for params in parsed}
        if len(seeds) != 1:
            raise ValueError(f"tables come from different seeds: {sorted(seeds)}")
        for position, params in enumerate(parsed):
            if str(params["family"]) != cls.family:
                raise ValueError(
                    f"table {position} holds {str(params['family'])!r} parameters, expected {cls.family!r}"
                )
            if int(params["table"]) != position:
                raise ValueError(
                    f"tables must be in table order: position {position} holds table {int(params['table'])}"
                )
        shapes = {params["projections"].shape for params in parsed}
        if len(shapes) != 1:
            raise ValueError(f"tables have different projection shapes: {sorted(shapes)}")
        return parsed, seeds.pop()

    def __repr__(self) -> str:
        centred = "centred" if self.center is not None else "uncentred"
        return (
            f"{type(self).__name__}(dim={self.dim}, num_tables={self.num_tables}, "
            f"hashes_per_table={self.hashes_per_table}, seed={self.seed}, {centred})"
        )
