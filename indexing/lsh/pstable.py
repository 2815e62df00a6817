"""p-stable (real-valued) LSH (Datar et al., 2004): ``h_i(o) = floor((o . X_i + b_i) / w)``.

``X_i`` is standard Gaussian and ``b_i`` uniform in ``[0, w]``; the K integers of a table are mixed into its
bucket key by :func:`~indexing.lsh.projection.encode_hash_values`. Multi-probe (Lv et al., VLDB 2007) shifts sets
of ``h_i`` by -1 or +1 in order of increasing summed squared distance to the slot boundary that the shift crosses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np

from indexing.lsh.projection import ProjectionFamily, encode_hash_values, perturbation_masks, table_rng

__all__ = ["PStableFamily"]


class PStableFamily(ProjectionFamily):
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
            rng = table_rng(seed, table)
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
                masks = perturbation_masks((distances[table, table_order] ** 2).tolist(), [1 << p for p in table_order])
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
