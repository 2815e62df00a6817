"""Choose an index's (num_tables, hashes_per_table, probes) from the collection itself.

A sample of the collection's own vectors is the query set (each query's own row excluded from its answers, as
a query by example is), its exact top-k the ground truth. Every candidate configuration of a grid that grows
with the collection is hashed in memory, probed with 0, 1, 2, 3, ... extra buckets per table (:data:`PROBE_STEPS`),
and scored by recall@k and by its cost (distinct candidates re-ranked, plus buckets looked up at
:data:`BUCKET_COST` candidates each). The cheapest configuration whose recall reaches the target wins; when none
does, the one with the best recall. Pure NumPy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from indexing.lsh.hashing import HashFamily, fit_center, make_family
from indexing.lsh.scan import as_unit_float32, cosine_top_k

__all__ = ["DEFAULT_TARGET_RECALL", "Trial", "TuneResult", "autotune", "default_grid"]

DEFAULT_TARGET_RECALL = 0.95
# Probe levels tried: steps of about 1.25x, so the level chosen overshoots the target recall (and pays for the
# candidates of the overshoot) by little.
PROBE_STEPS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)
# A bucket looked up costs about as much as this many candidates re-ranked. Measured through the served search
# on PostgreSQL at a million 1,024-d images (benchmarks/scale_bench.py): 7.3 ms for 1,056 buckets, ~1.1 us per
# candidate (its rows found, scored from the mapped vectors, the best ordered).
BUCKET_COST = 6.0
COUNT_SAMPLE = 20_000


@dataclass(frozen=True)
class Trial:
    """One measured configuration.

    Attributes:
        num_tables: L.
        hashes_per_table: K.
        probes: Extra buckets per table.
        recall: Mean recall@k of the sample queries against the exact scan.
        candidates: Mean distinct candidates re-ranked per query.
        buckets: Buckets looked up per query (``num_tables * (1 + probes)``).
    """

    num_tables: int
    hashes_per_table: int
    probes: int
    recall: float
    candidates: float
    buckets: int

    @property
    def cost(self) -> float:
        """Work per query, in candidates re-ranked: the candidates and :data:`BUCKET_COST` per bucket looked up."""
        return self.candidates + BUCKET_COST * self.buckets


@dataclass(frozen=True)
class TuneResult:
    """The chosen configuration and everything measured on the way.

    Attributes:
        chosen: The winning trial.
        target_recall: The recall it aimed for.
        met: Whether ``chosen`` reaches it.
        collection_size: n.
        sample: Queries used.
        top_k: k of recall@k.
        trials: Every measured trial (the cheapest probes level per configuration that met the target, or its
            best one).
    """

    chosen: Trial
    target_recall: float
    met: bool
    collection_size: int
    sample: int
    top_k: int
    trials: list[Trial] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary (stored with the index)."""
        data = asdict(self)
        data["ie"] = round(self.collection_size / max(self.chosen.candidates, 1.0), 2)
        return data


def default_grid(n: int) -> list[tuple[int, int]]:
    """(num_tables, hashes_per_table) pairs worth trying for ``n`` items.

    K is centred on ``log2(n)`` less a few bits (a bucket of a few dozen items per table), L on 8-32 tables.

    Args:
        n: Collection size, >= 1.

    Returns:
        The grid, smallest K first.
    """
    bits = max(1, math.ceil(math.log2(max(n, 2))))
    ks = sorted({min(max(k, 4), 24) for k in (bits - 6, bits - 4, bits - 2, bits)})
    return [(tables, k) for k in ks for tables in (8, 16, 32)]


def autotune(
    vectors: np.ndarray,
    *,
    family: str = "binary",
    target_recall: float = DEFAULT_TARGET_RECALL,
    top_k: int = 10,
    sample: int = 200,
    grid: list[tuple[int, int]] | None = None,
    center: bool = True,
    w: float = 4.0,
    seed: int = 0,
) -> TuneResult:
    """Find the cheapest (L, K, probes) whose recall@k on the collection's own vectors reaches the target.

    Args:
        vectors: ``(n, dim)`` the collection's vectors (normalised here).
        family: ``"binary"`` (SimHash) or ``"real"`` (p-stable).
        target_recall: Recall@k to reach, in (0, 1].
        top_k: k.
        sample: Queries drawn from the collection (all rows when n is smaller).
        grid: (num_tables, hashes_per_table) pairs; :func:`default_grid` by default.
        center: Hash the vectors relative to their mean (as ``build_index --center`` does).
        w: Bucket width of the real family.
        seed: Seeds the sample and the hash functions (the build must use the same seed).

    Returns:
        The :class:`TuneResult`.

    Raises:
        ValueError: Fewer than two vectors, a target outside (0, 1] or a bad ``top_k``/``sample``.
    """
    matrix = as_unit_float32(vectors)
    n = matrix.shape[0]
    if n < 2:
        raise ValueError(f"autotune needs at least 2 vectors, got {n}")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if top_k < 1 or sample < 1:
        raise ValueError(f"top_k and sample must be >= 1, got {top_k} and {sample}")
    k = min(top_k, n - 1)
    rng = np.random.default_rng(seed)
    query_rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = matrix[query_rows]
    # Exact answers, the query itself excluded (k + 1, then drop the row).
    exact_rows, _ = cosine_top_k(matrix, queries, k + 1)
    truth = [row[row != q][:k] for row, q in zip(exact_rows, query_rows, strict=True)]
    mean = fit_center(matrix) if center else None
    # Past COUNT_SAMPLE rows the candidates are counted on a uniform sample of the collection (an estimate);
    # the recall is always exact (the true neighbours are matched one by one).
    count_rows = None if n <= COUNT_SAMPLE else np.sort(rng.choice(n, size=COUNT_SAMPLE, replace=False))
    trials: list[Trial] = []
    for num_tables, hashes in grid or default_grid(n):
        hasher = make_family(
            family, matrix.shape[1], num_tables=num_tables, hashes_per_table=hashes, w=w, seed=seed, center=mean
        )
        trials.append(_best_probes(hasher, matrix, queries, query_rows, truth, target_recall, count_rows))
    met = [t for t in trials if t.recall >= target_recall]
    chosen = min(met, key=lambda t: t.cost) if met else max(trials, key=lambda t: (t.recall, -t.cost))
    return TuneResult(
        chosen=chosen,
        target_recall=target_recall,
        met=bool(met),
        collection_size=n,
        sample=len(query_rows),
        top_k=k,
        trials=trials,
    )


def _best_probes(
    hasher: HashFamily,
    matrix: np.ndarray,
    queries: np.ndarray,
    query_rows: np.ndarray,
    truth: list[np.ndarray],
    target_recall: float,
    count_rows: np.ndarray | None = None,
) -> Trial:
    """The fewest probes at which one configuration reaches the target (else its most probed level).

    A family's probe sequence is a prefix order (``probe_keys(q, p) == probe_keys(q, deepest)[:, : 1 + p]``,
    checked in tests/lsh/test_autotune.py), so one pass per query finds, for every row, the first probe column
    whose bucket holds it; a level of ``p`` probes finds the rows whose column is ``<= p``. The exact top-k items
    are the k best of all rows, so the top-k among the candidates holds exactly those of them that were found:
    recall@k is the share of the true top-k found.

    Only the rows that matter are hashed and matched: the queries' true neighbours (recall) and the rows that are
    counted (candidates). ``count_rows`` (a uniform sample of the collection) makes the candidate count an
    estimate, ``n / len(count_rows)`` times the sample's, so a million-image collection costs what a sample does;
    None counts every row (exact).
    """
    n = matrix.shape[0]
    counted = np.arange(n) if count_rows is None else np.asarray(count_rows, dtype=np.int64)
    needed, inverse = np.unique(np.concatenate([counted, *truth, query_rows]), return_inverse=True)
    counted_at = inverse[: counted.shape[0]]
    answer_at = np.split(inverse[counted.shape[0] : counted.shape[0] + sum(len(a) for a in truth)],
                         np.cumsum([len(a) for a in truth])[:-1])  # fmt: skip
    query_at = inverse[counted.shape[0] + sum(len(a) for a in truth) :]
    scale = n / counted.shape[0]
    keys = hasher.keys(matrix[needed])  # (m, num_tables)
    num_tables = keys.shape[1]
    deepest = min(PROBE_STEPS[-1], hasher.max_probes)
    levels = [p for p in PROBE_STEPS if p <= deepest]
    recalls = np.zeros((len(levels), len(queries)))
    candidates = np.zeros((len(levels), len(queries)))
    never = np.iinfo(np.int64).max
    for position, (query, row, answer) in enumerate(zip(queries, query_at, answer_at, strict=True)):
        probe = hasher.probe_keys(query, deepest)  # (num_tables, 1 + deepest)
        first = np.full(needed.shape[0], never, dtype=np.int64)
        for table in range(num_tables):
            column_order = np.argsort(probe[table], kind="stable")
            sorted_probe = probe[table][column_order]
            at = np.minimum(np.searchsorted(sorted_probe, keys[:, table]), len(sorted_probe) - 1)
            hit = sorted_probe[at] == keys[:, table]
            np.minimum(first, np.where(hit, column_order[at], never), out=first)
        first[row] = never  # a query by example never returns itself
        for level, probes in enumerate(levels):
            found = first <= probes
            candidates[level, position] = found[counted_at].sum() * scale
            recalls[level, position] = found[answer].mean() if len(answer) else 1.0
    trial: Trial | None = None
    for level, probes in enumerate(levels):
        trial = Trial(
            num_tables=num_tables,
            hashes_per_table=int(hasher.hashes_per_table),
            probes=probes,
            recall=float(recalls[level].mean()),
            candidates=float(candidates[level].mean()),
            buckets=num_tables * (1 + probes),
        )
        if trial.recall >= target_recall:
            break
    assert trial is not None  # levels always holds 0
    return trial
