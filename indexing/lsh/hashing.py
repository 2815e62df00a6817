"""LSH hash families: p-stable (real-valued) LSH and SimHash (binary) LSH.

Both families follow section 3 of the paper. A family holds ``num_tables`` hash functions
``g_1 .. g_L``; each ``g`` concatenates ``hashes_per_table`` (the paper's ``K``) elementary hashes, and
the K values of one table are encoded into a single signed 64-bit bucket key so that a bucket is one
``(table, key)`` pair, which fits a ``BigIntegerField`` and a composite B-tree index.

* :class:`PStableFamily`: ``h_i(o) = floor((o . X_i + b_i) / w)`` with ``X_i`` standard Gaussian and
  ``b_i`` uniform in ``[0, w]`` (Datar et al., 2004). The K integers are mixed into a key by
  :func:`encode_hash_values`.
* :class:`SimHashFamily`: ``h(v) = 1 if r . v >= 0 else 0`` with ``r`` standard Gaussian (Charikar, 2002).
  The K bits are packed into the key by :func:`pack_bits` (bit ``i`` is hyperplane ``i``).

Reproducibility: table ``t`` draws its parameters from
``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(t,)))`` (the ``t``-th child of
``SeedSequence(seed).spawn``), so adding tables never changes the earlier ones. Projections are computed
in float64, which keeps keys identical between processes and between a batch and a single query even
when BLAS sums in a different order (a float32 product can land on the other side of a slot boundary).
NumPy only promises bit-stable *bit generators*, not bit-stable Gaussian sampling across releases, so
the index stores every table's parameters (:meth:`table_params`) and rebuilds from them
(:meth:`from_table_params`) instead of trusting the seed forever.

Optional centring: post-ReLU CNN features are all non-negative, so every vector lies in one orthant
and hyperplanes through the origin cut the data very unevenly. Subtracting a mean vector
(:func:`fit_center`, fitted on the indexed collection and stored with the index) before hashing
spreads the data over the buckets. Centring is part of the family, so index and queries always agree.

Multi-probe: :meth:`probe_keys` returns, per table, the home bucket followed by ``probes`` extra
buckets in query-directed order (Lv et al., VLDB 2007): SimHash flips sets of bits in order of
increasing summed margin ``|r . v|``; p-stable shifts sets of ``h_i`` by -1 or +1 in order of increasing
summed squared distance to the slot boundary that the shift crosses.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar, Protocol, Self

import numpy as np

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "HashFamily",
    "PStableFamily",
    "SimHashFamily",
    "encode_hash_values",
    "family_from_table_params",
    "fit_center",
    "make_family",
    "pack_bits",
]

# splitmix64 constants (Steele, Lea and Flood, 2014); the start value is the FNV-1a 64-bit offset basis.
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


def _table_rng(seed: int, table: int) -> np.random.Generator:
    # The t-th child of SeedSequence(seed).spawn(): tables are independent and adding one changes no other.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(table,)))


def _perturbation_masks(scores: Sequence[float], bits: Sequence[int]) -> Iterator[int]:
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


class _ProjectionFamily:
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


class SimHashFamily(_ProjectionFamily):
    """Binary (SimHash) LSH: bit ``i`` of table ``t`` is ``1 if r_ti . (v - center) >= 0 else 0``.

    Two vectors at angle ``theta`` agree on one bit with probability ``1 - theta / pi``.

    Args:
        dim: dimensionality of the vectors.
        num_tables: number of tables (the paper's ``L``).
        hashes_per_table: hyperplanes per table (the paper's ``K``), in ``[1, 63]``.
        seed: non-negative seed from which every hyperplane is regenerated.
        center: optional ``(dim,)`` mean vector subtracted before hashing (see :func:`fit_center`).

    Raises:
        ValueError: on a non-positive ``dim`` or ``num_tables``, ``hashes_per_table`` outside
            ``[1, 63]``, a negative seed, or a ``center`` of the wrong shape.
    """

    family = "binary"

    def __init__(
        self,
        dim: int,
        *,
        num_tables: int,
        hashes_per_table: int,
        seed: int = 0,
        center: np.ndarray | None = None,
    ) -> None:
        self._validate_common(dim, num_tables, hashes_per_table, seed, MAX_SIMHASH_BITS)
        projections = np.stack(
            [_table_rng(seed, table).standard_normal((hashes_per_table, dim)) for table in range(num_tables)]
        )
        self._setup(projections, seed=seed, center=center)

    @classmethod
    def from_table_params(cls, tables: Sequence[bytes], *, center: np.ndarray | None = None) -> Self:
        """Rebuild a family from the bytes of :meth:`table_params`, one per table in table order.

        Args:
            tables: ``table_params(t)`` for ``t = 0 .. num_tables - 1``.
            center: the centre the index was built with, if any (stored with the index, not per table).

        Returns:
            A family that computes exactly the same keys as the one that produced ``tables``.

        Raises:
            ValueError: if the tables are empty, out of order, of another family, or inconsistent.
        """
        parsed, seed = cls._parse_tables(tables)
        projections = np.stack([params["projections"] for params in parsed])
        if projections.shape[1] > MAX_SIMHASH_BITS:
            raise ValueError(f"hashes_per_table must be in [1, 63], got {projections.shape[1]}")
        family = cls.__new__(cls)
        family._setup(projections, seed=seed, center=center)
        return family

    @property
    def max_probes(self) -> int:
        """Largest number of extra buckets per table: every other K-bit code, ``2**K - 1``."""
        return 2**self.hashes_per_table - 1

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        """Bucket keys of a batch of vectors.

        Args:
            vectors: array of shape ``(n, dim)``.

        Returns:
            int64 array ``(n, num_tables)``; each key packs the table's K bits (bit ``i`` = hyperplane ``i``).

        Raises:
            ValueError: on a wrong shape or non-finite values.
        """
        vectors = self._check_vectors(vectors)
        keys = np.empty((vectors.shape[0], self.num_tables), dtype=np.int64)
        self._blockwise(vectors, lambda projection: pack_bits(projection >= 0), keys)
        return keys

    def probe_keys(self, vector: np.ndarray, probes: int = 0) -> np.ndarray:
        """Keys to probe for one query: the home bucket, then ``probes`` extra buckets per table.

        Extra buckets flip sets of bits in order of increasing summed margin ``|r . (v - center)|``:
        the first extra bucket flips the bit whose hyperplane passes closest to the query. A summed
        (rather than squared) margin matches the log-odds of a near neighbour falling on the other
        side, which grow about linearly for the small margins that matter.

        Args:
            vector: query of shape ``(dim,)``.
            probes: extra buckets per table; ``0`` probes only the ``num_tables`` home buckets
                (the paper's plain LSH).

        Returns:
            int64 array ``(num_tables, 1 + min(probes, max_probes))``; column 0 holds the home keys
            (equal to ``keys(vector[None])[0]``) and columns are in probing order. The width is the
            same for every table, so the result is always rectangular.

        Raises:
            ValueError: on a wrong shape, non-finite values or negative ``probes``.
        """
        self._check_probes(probes)
        projection = self._project_one(vector)  # (num_tables, K)
        home = pack_bits(projection >= 0)
        extra = min(probes, self.max_probes)
        keys = np.empty((self.num_tables, 1 + extra), dtype=np.int64)
        keys[:, 0] = home
        if extra == 0:
            return keys
        margins = np.abs(projection)
        order = np.argsort(margins, axis=1, kind="stable")
        for table in range(self.num_tables):
            table_order = order[table].tolist()
            flips = islice(
                _perturbation_masks(margins[table, table_order].tolist(), [1 << b for b in table_order]), extra
            )
            keys[table, 1:] = home[table] ^ np.fromiter(flips, dtype=np.int64, count=extra)
        return keys


class PStableFamily(_ProjectionFamily):
    """Real-valued p-stable LSH: ``h_i(o) = floor(((o - center) . X_i + b_i) / w)``.

    ``X_i`` is standard Gaussian (2-stable, so the family is sensitive to Euclidean distance) and
    ``b_i`` uniform in ``[0, w]``. For two points at distance ``c`` one hash collides with probability
    ``1 - 2 Phi(-w/c) - 2 / (sqrt(2 pi) w/c) (1 - exp(-(w/c)**2 / 2))`` (Datar et al., 2004).

    Args:
        dim: dimensionality of the vectors.
        num_tables: number of tables (the paper's ``L``).
        hashes_per_table: hash functions per table (the paper's ``K``), ``>= 1``.
        w: slot width; the paper uses the authors' suggested 4. For L2-normalised vectors
            (distances at most 2) a smaller ``w`` gives finer buckets.
        seed: non-negative seed from which every ``X_i`` and ``b_i`` is regenerated.
        center: optional ``(dim,)`` mean vector subtracted before hashing (see :func:`fit_center`).

    Raises:
        ValueError: on non-positive ``dim``, ``num_tables``, ``hashes_per_table`` or ``w``, a negative
            seed, or a ``center`` of the wrong shape.
    """

    family = "real"
    w: float
    _offsets: np.ndarray  # (num_tables, hashes_per_table) float64 in [0, w]

    # No hard cap like SimHash's 63 bits: the K integers are mixed, not packed. The cap only guards
    # against a typo creating an enormous projection matrix.
    MAX_HASHES: ClassVar[int] = 4096

    def __init__(
        self,
        dim: int,
        *,
        num_tables: int,
        hashes_per_table: int,
        w: float = 4.0,
        seed: int = 0,
        center: np.ndarray | None = None,
    ) -> None:
        self._validate_common(dim, num_tables, hashes_per_table, seed, self.MAX_HASHES)
        if not (np.isfinite(w) and w > 0):
            raise ValueError(f"w must be a positive finite number, got {w}")
        projections = []
        offsets = []
        for table in range(num_tables):
            rng = _table_rng(seed, table)
            projections.append(rng.standard_normal((hashes_per_table, dim)))
            offsets.append(rng.uniform(0.0, w, hashes_per_table))
        self._setup_pstable(np.stack(projections), np.stack(offsets), w=float(w), seed=seed, center=center)

    def _setup_pstable(
        self,
        projections: np.ndarray,
        offsets: np.ndarray,
        *,
        w: float,
        seed: int,
        center: np.ndarray | None,
    ) -> None:
        self._setup(projections, seed=seed, center=center)
        self.w = w
        self._offsets = np.ascontiguousarray(offsets, dtype=np.float64)
        self._offsets.setflags(write=False)

    @classmethod
    def from_table_params(cls, tables: Sequence[bytes], *, center: np.ndarray | None = None) -> Self:
        """Rebuild a family from the bytes of :meth:`table_params`, one per table in table order.

        Args:
            tables: ``table_params(t)`` for ``t = 0 .. num_tables - 1``.
            center: the centre the index was built with, if any (stored with the index, not per table).

        Returns:
            A family that computes exactly the same keys as the one that produced ``tables``.

        Raises:
            ValueError: if the tables are empty, out of order, of another family, or inconsistent.
        """
        parsed, seed = cls._parse_tables(tables)
        widths = {float(params["w"]) for params in parsed}
        if len(widths) != 1:
            raise ValueError(f"tables have different slot widths w: {sorted(widths)}")
        family = cls.__new__(cls)
        family._setup_pstable(
            np.stack([params["projections"] for params in parsed]),
            np.stack([params["offsets"] for params in parsed]),
            w=widths.pop(),
            seed=seed,
            center=center,
        )
        return family

    @property
    def offsets(self) -> np.ndarray:
        """Read-only float64 array ``(num_tables, hashes_per_table)``: the ``b_i`` values."""
        return self._offsets

    @property
    def max_probes(self) -> int:
        """Largest number of extra buckets per table: every other shift in ``{-1, 0, 1}**K``, ``3**K - 1``."""
        return 3**self.hashes_per_table - 1

    def _param_arrays(self, table: int) -> dict[str, np.ndarray]:
        arrays = super()._param_arrays(table)
        arrays["offsets"] = self._offsets[table]
        arrays["w"] = np.array(self.w, dtype=np.float64)
        return arrays

    def _slots(self, projection: np.ndarray) -> np.ndarray:
        """``(proj + b) / w`` before flooring, for projections of shape ``(..., num_tables, K)``."""
        return (projection + self._offsets) / self.w

    def _hash_block(self, projection: np.ndarray) -> np.ndarray:
        return np.floor(self._slots(projection)).astype(np.int64)

    def hash_values(self, vectors: np.ndarray) -> np.ndarray:
        """The integer hash values ``h_i`` themselves, before they are mixed into keys.

        Args:
            vectors: array of shape ``(n, dim)``.

        Returns:
            int64 array ``(n, num_tables, hashes_per_table)``.

        Raises:
            ValueError: on a wrong shape or non-finite values.
        """
        vectors = self._check_vectors(vectors)
        values = np.empty((vectors.shape[0], self.num_tables, self.hashes_per_table), dtype=np.int64)
        self._blockwise(vectors, self._hash_block, values)
        return values

    def keys(self, vectors: np.ndarray) -> np.ndarray:
        """Bucket keys of a batch of vectors.

        Args:
            vectors: array of shape ``(n, dim)``.

        Returns:
            int64 array ``(n, num_tables)``: each table's K hash values mixed by :func:`encode_hash_values`.

        Raises:
            ValueError: on a wrong shape or non-finite values.
        """
        vectors = self._check_vectors(vectors)
        keys = np.empty((vectors.shape[0], self.num_tables), dtype=np.int64)
        self._blockwise(vectors, lambda projection: encode_hash_values(self._hash_block(projection)), keys)
        return keys

    def probe_keys(self, vector: np.ndarray, probes: int = 0) -> np.ndarray:
        """Keys to probe for one query: the home bucket, then ``probes`` extra buckets per table.

        Query-directed probing (Lv et al., 2007): shifting ``h_i`` by -1 costs the distance
        ``w * frac_i`` from the projection to the lower slot boundary, by +1 the distance
        ``w * (1 - frac_i)`` to the upper one. Perturbation sets (at most one shift per ``h_i``) are
        generated in order of increasing summed squared distance, with a heap over the 2K sorted
        distances.

        Args:
            vector: query of shape ``(dim,)``.
            probes: extra buckets per table; ``0`` probes only the ``num_tables`` home buckets
                (the paper's plain LSH).

        Returns:
            int64 array ``(num_tables, 1 + min(probes, max_probes))``; column 0 holds the home keys
            (equal to ``keys(vector[None])[0]``) and columns are in probing order.

        Raises:
            ValueError: on a wrong shape, non-finite values or negative ``probes``.
        """
        self._check_probes(probes)
        slots = self._slots(self._project_one(vector))  # (num_tables, K)
        home = np.floor(slots)
        extra = min(probes, self.max_probes)
        values = np.repeat(home.astype(np.int64)[:, np.newaxis, :], 1 + extra, axis=1)  # (tables, 1+extra, K)
        if extra > 0:
            fraction = slots - home
            hashes = self.hashes_per_table
            # Perturbation j < K shifts h_j by -1, perturbation K + j shifts h_j by +1.
            low_bits = (1 << hashes) - 1
            distances = np.concatenate([fraction, 1.0 - fraction], axis=1) * self.w
            order = np.argsort(distances, axis=1, kind="stable")
            for table in range(self.num_tables):
                table_order = order[table].tolist()
                masks = _perturbation_masks(
                    (distances[table, table_order] ** 2).tolist(), [1 << p for p in table_order]
                )
                column = 0
                for mask in masks:  # bit p of mask: perturbation p is applied
                    minus, plus = mask & low_bits, mask >> hashes
                    if minus & plus:
                        continue  # shifts one h_i both ways: not a bucket; its children may be valid
                    column += 1
                    while mask:
                        lowest = mask & -mask
                        perturbation = lowest.bit_length() - 1
                        values[table, column, perturbation % hashes] += -1 if perturbation < hashes else 1
                        mask ^= lowest
                    if column == extra:
                        break
        return encode_hash_values(values)


@dataclass(frozen=True)
class FamilySpec:
    """A registered hash family: what model choices, the CLI, forms, the API, evaluation and plots read."""

    cls: Any  # the family class: ``cls(dim, num_tables=, hashes_per_table=, seed=, center=, **params)``
    label: str
    marker: str  # its plot marker
    max_hashes: int | None = None  # the largest K, where the key packing bounds it
    params: tuple[str, ...] = ()  # the family's own parameters (keyword arguments beyond the common ones)


# The single registry of LSH families: a new family is its class plus one line here.
FAMILIES: dict[str, FamilySpec] = {
    "real": FamilySpec(PStableFamily, "p-stable (real-valued)", "o", params=("w",)),
    "binary": FamilySpec(SimHashFamily, "SimHash (binary)", "s", max_hashes=MAX_SIMHASH_BITS),
}


def _spec(family: str) -> FamilySpec:
    spec = FAMILIES.get(family)
    if spec is None:
        raise ValueError(f"family must be one of {', '.join(repr(f) for f in FAMILIES)}, got {family!r}")
    return spec


def make_family(
    family: str,
    dim: int,
    *,
    num_tables: int,
    hashes_per_table: int,
    w: float = 4.0,
    seed: int = 0,
    center: np.ndarray | None = None,
) -> SimHashFamily | PStableFamily:
    """Build a hash family by name, as stored on an index row.

    Args:
        family: ``"real"`` (p-stable) or ``"binary"`` (SimHash).
        dim: dimensionality of the vectors.
        num_tables: number of tables (the paper's ``L``).
        hashes_per_table: hashes per table (the paper's ``K``).
        w: slot width, used by the ``"real"`` family only.
        seed: non-negative seed.
        center: optional ``(dim,)`` mean vector subtracted before hashing.

    Returns:
        A :class:`PStableFamily` or :class:`SimHashFamily`.

    Raises:
        ValueError: on an unknown family name or invalid parameters.
    """
    spec = _spec(family)
    params = {"w": w}
    extra = {name: params[name] for name in spec.params}
    family_obj: SimHashFamily | PStableFamily = spec.cls(
        dim, num_tables=num_tables, hashes_per_table=hashes_per_table, seed=seed, center=center, **extra
    )
    return family_obj


def family_from_table_params(
    family: str, tables: Sequence[bytes], *, center: np.ndarray | None = None
) -> SimHashFamily | PStableFamily:
    """Rebuild a family by name from stored table parameters (see ``from_table_params``).

    Args:
        family: ``"real"`` or ``"binary"``.
        tables: ``table_params(t)`` for every table, in table order.
        center: the centre the index was built with, if any.

    Returns:
        The rebuilt family.

    Raises:
        ValueError: on an unknown family name or inconsistent parameters.
    """
    rebuilt: SimHashFamily | PStableFamily = _spec(family).cls.from_table_params(tables, center=center)
    return rebuilt
