"""SimHash (binary) LSH (Charikar, 2002): ``h(v) = 1 if r . v >= 0 else 0`` with ``r`` standard Gaussian.

The K bits of a table are packed into its bucket key by :func:`~indexing.lsh.projection.pack_bits` (bit ``i`` is
hyperplane ``i``). Multi-probe (Lv et al., VLDB 2007) flips sets of bits in order of increasing summed margin
``|r . v|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import Self

import numpy as np

from indexing.lsh.projection import MAX_SIMHASH_BITS, ProjectionFamily, pack_bits, perturbation_masks, table_rng

__all__ = ["SimHashFamily"]


class SimHashFamily(ProjectionFamily):
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
            [table_rng(seed, table).standard_normal((hashes_per_table, dim)) for table in range(num_tables)]
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
                perturbation_masks(margins[table, table_order].tolist(), [1 << b for b in table_order]), extra
            )
            keys[table, 1:] = home[table] ^ np.fromiter(flips, dtype=np.int64, count=extra)
        return keys
