"""LSH hash families and their registry: p-stable (real-valued) LSH and SimHash (binary) LSH.

Both families follow section 3 of the paper; the machinery they share (bucket keys, centring, seeded tables,
probing order, table parameters) is in :mod:`indexing.lsh.projection`, each family in its own module:

* :class:`~indexing.lsh.pstable.PStableFamily`: ``h_i(o) = floor((o . X_i + b_i) / w)`` with ``X_i`` standard
  Gaussian and ``b_i`` uniform in ``[0, w]`` (Datar et al., 2004); the K integers are mixed into a key by
  :func:`encode_hash_values`.
* :class:`~indexing.lsh.simhash.SimHashFamily`: ``h(v) = 1 if r . v >= 0 else 0`` with ``r`` standard Gaussian
  (Charikar, 2002); the K bits are packed into the key by :func:`pack_bits` (bit ``i`` is hyperplane ``i``).

:data:`FAMILIES` is the one registry of families, what model choices, the CLI, the API, evaluation and plots read:
a new family is its class plus one :class:`FamilySpec` line there (or a :func:`register_family` call).
:func:`make_family` and :func:`family_from_table_params` build a family by its registered name, the one stored on
an index row with the family's own parameters (:func:`family_params`).

Multi-probe: ``probe_keys`` returns, per table, the home bucket followed by ``probes`` extra buckets in
query-directed order (Lv et al., VLDB 2007): SimHash flips sets of bits in order of increasing summed margin
``|r . v|``; p-stable shifts sets of ``h_i`` by -1 or +1 in order of increasing summed squared distance to the
slot boundary that the shift crosses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexing.lsh.projection import (
    MAX_SIMHASH_BITS,
    HashFamily,
    ProjectionFamily,
    encode_hash_values,
    fit_center,
    pack_bits,
)
from indexing.lsh.pstable import PStableFamily
from indexing.lsh.simhash import SimHashFamily

__all__ = [
    "FAMILIES",
    "MAX_SIMHASH_BITS",
    "FamilySpec",
    "HashFamily",
    "PStableFamily",
    "ProjectionFamily",
    "SimHashFamily",
    "encode_hash_values",
    "family_from_table_params",
    "family_params",
    "fit_center",
    "make_family",
    "pack_bits",
    "register_family",
    "unregister_family",
]


@dataclass(frozen=True)
class FamilySpec:
    """A registered hash family: what model choices, the CLI, forms, the API, evaluation and plots read."""

    # The family class: ``cls(dim, num_tables=, hashes_per_table=, seed=, center=, **params)`` builds one and
    # ``cls.from_table_params(tables, center=)`` rebuilds one from its stored tables.
    cls: Any
    label: str
    marker: str  # its plot marker
    max_hashes: int | None = None  # the largest K, where the key packing bounds it
    # The family's own parameters (keyword arguments beyond the common ones) and their defaults; an index row
    # stores them in LSHIndex.params.
    params: Mapping[str, Any] = field(default_factory=dict)


# The single registry of LSH families: a new family is its class plus one line here.
FAMILIES: dict[str, FamilySpec] = {
    "real": FamilySpec(PStableFamily, "p-stable (real-valued)", "o", params={"w": 4.0}),
    "binary": FamilySpec(SimHashFamily, "SimHash (binary)", "s", max_hashes=MAX_SIMHASH_BITS),
}


def register_family(name: str, spec: FamilySpec, *, replace: bool = False) -> None:
    """Add a hash family to :data:`FAMILIES` (the model's choices, the CLI and the API read it from there).

    Args:
        name: The name an index row stores, at most 8 characters (``LSHIndex.family``).
        spec: The family's class, label, plot marker, K bound and own parameters.
        replace: Allow replacing a registered family of that name.

    Raises:
        ValueError: A name that is taken (without ``replace``), empty or longer than 8 characters.
    """
    if not 1 <= len(name) <= 8:
        raise ValueError(f"a family name must have 1 to 8 characters, got {name!r}")
    if name in FAMILIES and not replace:
        raise ValueError(f"family {name!r} is registered already")
    FAMILIES[name] = spec


def unregister_family(name: str) -> None:
    """Remove a family from :data:`FAMILIES` (tests that registered one); an unknown name is ignored."""
    FAMILIES.pop(name, None)


def _spec(family: str) -> FamilySpec:
    spec = FAMILIES.get(family)
    if spec is None:
        raise ValueError(f"family must be one of {', '.join(repr(f) for f in FAMILIES)}, got {family!r}")
    return spec


def family_params(family: str, **params: Any) -> dict[str, Any]:
    """The family's own parameters, given ones over its defaults; parameters of other families are dropped.

    Args:
        family: A registered family name.
        **params: Parameters, e.g. ``w=2.0``; one that belongs to another registered family (a sweep passing
            ``w`` to every family) is ignored.

    Returns:
        ``{name: value}`` for every parameter of the family, e.g. ``{"w": 2.0}`` for ``"real"``, ``{}`` for
        ``"binary"``.

    Raises:
        ValueError: An unknown family, or a parameter no registered family has.
    """
    spec = _spec(family)
    known = {name for registered in FAMILIES.values() for name in registered.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown family parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return {name: params.get(name, default) for name, default in spec.params.items()}


def make_family(
    family: str,
    dim: int,
    *,
    num_tables: int,
    hashes_per_table: int,
    seed: int = 0,
    center: np.ndarray | None = None,
    **params: Any,
) -> HashFamily:
    """Build a hash family by its registered name, as stored on an index row.

    Args:
        family: A name from :data:`FAMILIES`: ``"real"`` (p-stable), ``"binary"`` (SimHash), ...
        dim: dimensionality of the vectors.
        num_tables: number of tables (the paper's ``L``).
        hashes_per_table: hashes per table (the paper's ``K``).
        seed: non-negative seed.
        center: optional ``(dim,)`` mean vector subtracted before hashing.
        **params: the family's own parameters (see :func:`family_params`), e.g. ``w`` (slot width) of
            ``"real"``; those of other families are ignored.

    Returns:
        An instance of the registered class, e.g. :class:`PStableFamily` or :class:`SimHashFamily`.

    Raises:
        ValueError: on an unknown family name or invalid parameters.
    """
    own = family_params(family, **params)
    built: HashFamily = _spec(family).cls(
        dim, num_tables=num_tables, hashes_per_table=hashes_per_table, seed=seed, center=center, **own
    )
    return built


def family_from_table_params(family: str, tables: Sequence[bytes], *, center: np.ndarray | None = None) -> HashFamily:
    """Rebuild a family by name from stored table parameters (see ``from_table_params``).

    Args:
        family: A name from :data:`FAMILIES`.
        tables: ``table_params(t)`` for every table, in table order.
        center: the centre the index was built with, if any.

    Returns:
        The rebuilt family.

    Raises:
        ValueError: on an unknown family name or inconsistent parameters.
    """
    rebuilt: HashFamily = _spec(family).cls.from_table_params(tables, center=center)
    return rebuilt
