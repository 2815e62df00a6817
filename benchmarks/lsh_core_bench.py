"""In-memory benchmark of the pure LSH core (indexing/lsh) against FAISS and hnswlib baselines.

Synthetic data shaped like post-ReLU CNN features: ``--clusters`` Gaussian class centres, each item
``relu(centre + spread * noise)`` L2-normalised (so every vector is non-negative, the case centring is
for), and queries that are ReLU'd perturbations of random indexed items. Every method runs in this
process on the same vectors and queries; recall@k is measured against the exact cosine scan.

Columns: recall@k; IE = n / distance computations per query (unique candidates re-ranked for LSH,
``ndis`` for FAISS); IE_rep = n / summed bucket sizes (the paper's count, an item found in several
tables counted once per table); p50/p95 latency of one query in ms, index only (hash, bucket
lookup, re-rank; no feature extraction); build seconds; hashed keys per second; bucket statistics
(distinct (table, key) buckets, items per bucket, purity w.r.t. the cluster labels).

Run from the repository root::

    .venv/bin/python benchmarks/lsh_core_bench.py        # n=100k, dim=1024: ~2.5 min of CPU on 2 cores
    .venv/bin/python benchmarks/lsh_core_bench.py --n 20000 --queries 50 --skip hnsw,hnswlib   # quick
    .venv/bin/python benchmarks/lsh_core_bench.py --n 1000000 --queries 20 --skip flat,binhash,multihash,hnsw,hnswlib \
        --config binary,L=16,K=18,probes=64+128       # 1M vectors: ~5 GB RAM, ~2.5 min for the LSH rows

Timings are wall-clock per query on this machine: rerun every method in the same invocation before
comparing, and expect noise when other processes share the cores. NumPy's BLAS threads help the
batch hashing but make single-query re-ranking jumpy (latencies snap to ~8 ms steps on a busy
2-core box): ``OPENBLAS_NUM_THREADS=1`` gives steadier per-query numbers, closer to one web worker.
hnswlib builds its graph with several threads, so its recall varies slightly between runs; everything
else is seeded.

``--config`` (repeatable) replaces the default LSH configurations: comma-separated ``family``
(binary|real) then ``L=``, ``K=``, optional ``w=`` (real), ``center=0|1``, ``probes=a+b+c``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any directory

from indexing.lsh.hashing import fit_center, make_family  # noqa: E402
from indexing.lsh.index import LshIndex  # noqa: E402
from indexing.lsh.scan import cosine_top_k, rerank  # noqa: E402
from indexing.lsh.stats import bucket_stats  # noqa: E402
from indexing.lsh.store import InMemoryBucketStore  # noqa: E402

BASELINES = ("flat", "binhash", "multihash", "hnsw", "hnswlib")


@dataclass(frozen=True)
class LshConfig:
    family: str
    num_tables: int
    hashes_per_table: int
    w: float = 4.0
    center: bool = True
    probes: tuple[int, ...] = (0,)
    note: str = ""

    def label(self) -> str:
        width = f" w={self.w:g}" if self.family == "real" else ""
        centred = " centred" if self.center else ""
        return f"L={self.num_tables} K={self.hashes_per_table}{width}{centred}"


DEFAULT_CONFIGS = (
    # The paper's best settings (Tables 1-2). With L2-normalised vectors (distances <= 2) the paper's
    # w=4 leaves nearly every item in one slot per hash, so the real index degenerates to a scan.
    LshConfig("real", 7, 2, w=4.0, center=False, note="paper's best real"),
    LshConfig("binary", 3, 6, center=False, note="paper's best binary"),
    LshConfig("binary", 3, 6, center=True),
    LshConfig("binary", 16, 14, center=False, probes=(0, 8)),
    LshConfig("binary", 16, 14, center=True, probes=(0, 8, 32)),
    LshConfig("binary", 16, 16, center=True, probes=(0, 16, 64)),
    LshConfig("real", 16, 16, w=2.0, center=False, probes=(0, 16, 64)),
)


@dataclass
class Row:
    method: str
    params: str
    recall: float
    ie: float
    ie_repeats: float | None = None
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    build_s: float | None = None
    keys_per_s: float | None = None
    buckets: int | None = None
    items_per_bucket: float | None = None
    purity: float | None = None
    note: str = ""


def parse_config(text: str) -> LshConfig:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or parts[0] not in ("binary", "real"):
        raise argparse.ArgumentTypeError(f"config must start with binary or real, got {text!r}")
    values: dict[str, str] = {}
    for part in parts[1:]:
        name, _, value = part.partition("=")
        if name not in {"L", "K", "w", "center", "probes"} or not value:
            raise argparse.ArgumentTypeError(f"unknown config item {part!r} in {text!r}")
        values[name] = value
    if "L" not in values or "K" not in values:
        raise argparse.ArgumentTypeError(f"config needs L= and K=, got {text!r}")
    return LshConfig(
        family=parts[0],
        num_tables=int(values["L"]),
        hashes_per_table=int(values["K"]),
        w=float(values.get("w", 4.0)),
        center=values.get("center", "1") not in ("0", "false", "no"),
        probes=tuple(int(p) for p in values.get("probes", "0").split("+")),
    )


def make_dataset(
    n: int, dim: int, clusters: int, spread: float, seed: int, block: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered, non-negative, L2-normalised float32 vectors and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    labels = rng.integers(0, clusters, n)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):  # blockwise: 1M x 1024 without float64 temporaries
        stop = min(n, start + block)
        chunk = centres[labels[start:stop]] + spread * rng.standard_normal((stop - start, dim), dtype=np.float32)
        np.maximum(chunk, 0.0, out=chunk)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        vectors[start:stop] = chunk
    return vectors, labels


def make_queries(vectors: np.ndarray, num_queries: int, noise: float, seed: int) -> np.ndarray:
    """ReLU'd, renormalised perturbations (``noise`` = norm of the added vector) of random indexed items."""
    rng = np.random.default_rng(seed)
    sources = rng.choice(vectors.shape[0], num_queries, replace=False)
    offsets = rng.standard_normal((num_queries, vectors.shape[1]), dtype=np.float32)
    offsets *= noise / np.linalg.norm(offsets, axis=1, keepdims=True)
    queries = np.maximum(vectors[sources] + offsets, 0.0)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def recall_at_k(found: Sequence[np.ndarray], truth: np.ndarray) -> float:
    top_k = truth.shape[1]
    hits = [np.intersect1d(ids[:top_k], row).shape[0] for ids, row in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / top_k


def time_queries(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    search(queries[0])  # warm-up: first-call allocations and lazy setup are not query latency
    found, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        found.append(search(query))
        latencies.append(time.perf_counter() - start)
    return found, np.array(latencies) * 1e3


def run_lsh(
    config: LshConfig, vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, truth: np.ndarray, seed: int
) -> list[Row]:
    n, dim = vectors.shape
    center = fit_center(vectors) if config.center else None
    family = make_family(
        config.family,
        dim,
        num_tables=config.num_tables,
        hashes_per_table=config.hashes_per_table,
        w=config.w,
        seed=seed,
        center=center,
    )
    sample = vectors[: min(n, 20_000)]
    start = time.perf_counter()
    family.keys(sample)  # hashing throughput alone, on a sample
    keys_per_s = sample.shape[0] * config.num_tables / (time.perf_counter() - start)
    store = InMemoryBucketStore()
    index = LshIndex(family, store)
    start = time.perf_counter()
    index.fit(vectors)  # hash every vector, fill the store
    store.compact()  # the store sorts lazily: count that sorting as build time
    build_s = time.perf_counter() - start
    assert index.bucket_keys is not None
    stats = bucket_stats(index.bucket_keys, labels)
    rows = []
    for probes in config.probes:
        counts: list[tuple[int, int]] = []

        def search(query: np.ndarray, probes: int = probes, counts: list[tuple[int, int]] = counts) -> np.ndarray:
            result = index.query(query, top_k=truth.shape[1], probes=probes)
            counts.append((result.candidates, result.candidates_with_repeats))
            return result.ids

        found, latencies = time_queries(search, queries)
        candidates = np.array(counts[1:], dtype=np.float64)  # drop the warm-up query
        rows.append(
            Row(
                method=f"lsh-{config.family}",
                params=f"{config.label()} probes={probes}",
                recall=recall_at_k(found, truth),
                ie=n / max(candidates[:, 0].mean(), 1.0),
                ie_repeats=n / max(candidates[:, 1].mean(), 1.0),
                p50_ms=float(np.percentile(latencies, 50)),
                p95_ms=float(np.percentile(latencies, 95)),
                build_s=build_s,
                keys_per_s=keys_per_s,
                buckets=stats.num_buckets,
                items_per_bucket=stats.avg_items_per_bucket,
                purity=stats.avg_purity,
                note=config.note,
            )
        )
    return rows


def random_codes(vectors: np.ndarray, planes: np.ndarray, center: np.ndarray) -> np.ndarray:
    """SimHash bits of centred vectors, packed little-endian so that bit i of the code is hyperplane i."""
    bits = (vectors.astype(np.float64) - center) @ planes >= 0
    return np.packbits(bits, axis=1, bitorder="little")


def _baseline_row(
    method: str,
    params: str,
    found: list[np.ndarray],
    latencies: np.ndarray,
    truth: np.ndarray,
    *,
    ie: float,
    build_s: float,
    note: str = "",
) -> Row:
    return Row(
        method=method,
        params=params,
        recall=recall_at_k(found, truth),
        ie=ie,
        p50_ms=float(np.percentile(latencies, 50)),
        p95_ms=float(np.percentile(latencies, 95)),
        build_s=build_s,
        note=note,
    )


def run_faiss_flat(faiss: Any, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> list[Row]:
    start = time.perf_counter()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    build_s = time.perf_counter() - start
    found, latencies = time_queries(lambda q: index.search(q[np.newaxis, :], truth.shape[1])[1][0], queries)
    return [_baseline_row("faiss-flat", "IndexFlatIP (exact)", found, latencies, truth, ie=1.0, build_s=build_s)]


def run_faiss_binary(
    faiss: Any,
    which: set[str],
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    code_bits: int,
    rerank_depth: int,
    seed: int,
) -> list[Row]:
    """FAISS's bucketed SimHash: IndexBinaryHash (one table, Hamming-ball probing) and IndexBinaryMultiHash.

    FAISS ranks the members of the probed buckets by Hamming distance over the whole code. With
    ``rerank_depth == 0`` (the default) every member of the probed buckets (a ``range_search`` over all
    Hamming distances) is re-ranked by exact cosine, the same protocol as ``LshIndex``; otherwise only
    the Hamming top-``rerank_depth``. IE counts the codes FAISS compared (``indexBinaryHash_stats.ndis``).
    """
    n, dim = vectors.shape
    top_k = truth.shape[1]
    bucket_bits = 16
    # The same kind of random hyperplanes as SimHashFamily, through the same centre.
    planes = np.random.default_rng(seed).standard_normal((dim, code_bits))
    center = fit_center(vectors).astype(np.float64)
    start = time.perf_counter()
    codes = np.concatenate([random_codes(vectors[i : i + 65536], planes, center) for i in range(0, n, 65536)])
    code_s = time.perf_counter() - start
    indexes: list[tuple[str, str, Any]] = []
    if "binhash" in which:
        indexes.append(
            ("faiss-binhash", f"d={code_bits} b={bucket_bits}", faiss.IndexBinaryHash(code_bits, bucket_bits))
        )
    if "multihash" in which:
        nhash = code_bits // bucket_bits
        indexes.append(
            (
                "faiss-multihash",
                f"d={code_bits} nhash={nhash} b={bucket_bits}",
                faiss.IndexBinaryMultiHash(code_bits, nhash, bucket_bits),
            )
        )
    stats = faiss.cvar.indexBinaryHash_stats
    rows = []
    for method, params, index in indexes:
        start = time.perf_counter()
        index.add(codes)
        build_s = time.perf_counter() - start + code_s

        def search(query: np.ndarray, index: Any = index) -> np.ndarray:
            code = random_codes(query[np.newaxis, :], planes, center)
            if rerank_depth == 0:
                shortlist = index.range_search(code, code_bits + 1)[2]  # every member of the probed buckets
            else:
                shortlist = index.search(code, rerank_depth)[1][0]
            return rerank(vectors, shortlist[shortlist >= 0], query, top_k)[0]

        for nflip in (0, 1, 2):
            index.nflip = nflip
            stats.reset()
            found, latencies = time_queries(search, queries)
            ndis = stats.ndis / max(stats.nq, 1)
            rows.append(
                _baseline_row(
                    method,
                    f"{params} nflip={nflip}",
                    found,
                    latencies,
                    truth,
                    ie=n / max(ndis, 1.0),
                    build_s=build_s,
                    note=f"Hamming top-{rerank_depth} -> cosine" if rerank_depth else "all probed -> cosine",
                )
            )
    return rows


def run_faiss_hnsw(faiss: Any, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> list[Row]:
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(vectors)
    build_s = time.perf_counter() - start
    rows = []
    for ef in (16, 64, 256):
        index.hnsw.efSearch = ef
        faiss.cvar.hnsw_stats.reset()
        found, latencies = time_queries(lambda q: index.search(q[np.newaxis, :], truth.shape[1])[1][0], queries)
        ndis = faiss.cvar.hnsw_stats.ndis / (queries.shape[0] + 1)  # +1: the warm-up query
        ie = vectors.shape[0] / max(ndis, 1.0)
        params = f"M=16 efC=40 efSearch={ef}"
        rows.append(_baseline_row("faiss-hnsw", params, found, latencies, truth, ie=ie, build_s=build_s))
    return rows


def run_hnswlib(hnswlib: Any, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int) -> list[Row]:
    start = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=vectors.shape[0], ef_construction=40, M=16)
    index.add_items(vectors, num_threads=threads)
    build_s = time.perf_counter() - start
    rows = []
    for ef in (16, 64, 256):
        index.set_ef(ef)
        found, latencies = time_queries(lambda q: index.knn_query(q, k=truth.shape[1])[0][0], queries)
        rows.append(
            _baseline_row(
                "hnswlib",
                f"M=16 efC=40 ef={ef}",
                found,
                latencies,
                truth,
                ie=float("nan"),
                build_s=build_s,
                note="no distance counter",
            )
        )
    return rows


def _progress(rows: list[Row]) -> list[Row]:
    for row in rows:
        print(f"  done {row.method} {row.params}: recall={row.recall:.3f} IE={row.ie:.1f} p50={row.p50_ms:.2f}ms")
    sys.stdout.flush()
    gc.collect()  # each runner has returned: free its index before the next one builds
    return rows


def run_baselines(
    skipped: set[str], vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> list[Row]:
    rows: list[Row] = []
    try:
        import faiss
    except ImportError as exc:
        print(f"# skipped FAISS baselines (flat, binhash, multihash, hnsw): cannot import faiss ({exc})")
    else:
        if "flat" not in skipped:
            rows += _progress(run_faiss_flat(faiss, vectors, queries, truth))
        if binary := {"binhash", "multihash"} - skipped:
            rows += _progress(
                run_faiss_binary(
                    faiss,
                    binary,
                    vectors,
                    queries,
                    truth,
                    code_bits=args.code_bits,
                    rerank_depth=args.rerank_depth,
                    seed=args.seed,
                )
            )
        if "hnsw" not in skipped:
            rows += _progress(run_faiss_hnsw(faiss, vectors, queries, truth))
    if "hnswlib" not in skipped:
        try:
            import hnswlib
        except ImportError as exc:
            print(f"# skipped hnswlib baseline: cannot import hnswlib ({exc})")
        else:
            rows += _progress(run_hnswlib(hnswlib, vectors, queries, truth, args.threads))
    return rows


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0].rstrip("dfg") or 0)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-".rjust(width)
    return format(value, spec)


def print_table(rows: Sequence[Row], top_k: int) -> None:
    header = (
        f"{'method':<16} {'params':<36} {f'rec@{top_k}':>7} {'IE':>8} {'IE_rep':>8} {'p50ms':>7} {'p95ms':>7} "
        f"{'build_s':>7} {'keys/s':>8} {'buckets':>8} {'it/bkt':>8} {'purity':>6}  note"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.method:<16} {row.params:<36} {row.recall:>7.3f} {_fmt(row.ie, '8.1f')} "
            f"{_fmt(row.ie_repeats, '8.1f')} {row.p50_ms:>7.2f} {row.p95_ms:>7.2f} {_fmt(row.build_s, '7.1f')} "
            f"{_fmt(row.keys_per_s, '8.2g')} {_fmt(row.buckets, '8d')} {_fmt(row.items_per_bucket, '8.1f')} "
            f"{_fmt(row.purity, '6.2f')}  {row.note}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="indexed vectors (default 100000)")
    parser.add_argument("--dim", type=int, default=1024, help="dimensionality (default 1024)")
    parser.add_argument("--clusters", type=int, default=100, help="classes in the synthetic data (default 100)")
    parser.add_argument("--spread", type=float, default=0.5, help="within-class noise before ReLU (default 0.5)")
    parser.add_argument("--queries", type=int, default=100, help="queries (default 100)")
    parser.add_argument("--query-noise", type=float, default=0.3, help="norm of the query perturbation (default 0.3)")
    parser.add_argument("--top-k", type=int, default=10, help="k of recall@k (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, queries and hash families")
    parser.add_argument("--config", type=parse_config, action="append", help="LSH configuration (repeatable)")
    parser.add_argument("--skip", default="", help=f"comma-separated baselines to skip: {','.join(BASELINES)}")
    parser.add_argument("--code-bits", type=int, default=256, help="SimHash code length for FAISS binary indexes")
    parser.add_argument(
        "--rerank-depth",
        type=int,
        default=0,
        help="FAISS binary indexes: re-rank the Hamming top-N by cosine (default 0: every probed item)",
    )
    args = parser.parse_args(argv)
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    if unknown := skipped - set(BASELINES):
        parser.error(f"unknown baselines in --skip: {sorted(unknown)}")
    configs = tuple(args.config) if args.config else DEFAULT_CONFIGS
    args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    print(
        f"# lsh_core_bench: n={args.n} dim={args.dim} clusters={args.clusters} spread={args.spread} "
        f"queries={args.queries} query_noise={args.query_noise} top_k={args.top_k} seed={args.seed}"
    )
    print(f"# python {platform.python_version()}, numpy {np.__version__}, {args.threads} cores, {platform.machine()}")
    bench_start = start = time.perf_counter()
    vectors, labels = make_dataset(args.n, args.dim, args.clusters, args.spread, args.seed)
    queries = make_queries(vectors, args.queries, args.query_noise, args.seed + 1)
    print(f"# data generated in {time.perf_counter() - start:.1f}s")
    start = time.perf_counter()
    truth, truth_scores = cosine_top_k(vectors, queries, args.top_k)
    print(
        f"# ground truth: exact blockwise scan of all queries in {time.perf_counter() - start:.1f}s; mean cosine "
        f"at rank 1 / 2 / {args.top_k}: {truth_scores[:, 0].mean():.3f} / {truth_scores[:, 1].mean():.3f} / "
        f"{truth_scores[:, -1].mean():.3f}"
    )
    sys.stdout.flush()

    latencies = time_queries(lambda q: cosine_top_k(vectors, q, args.top_k)[0][0], queries)[1]
    rows = _progress(
        [
            Row(
                "scan",
                "cosine_top_k (exact, numpy)",
                recall=1.0,
                ie=1.0,
                ie_repeats=1.0,
                p50_ms=float(np.percentile(latencies, 50)),
                p95_ms=float(np.percentile(latencies, 95)),
            )
        ]
    )
    for config in configs:
        rows += _progress(run_lsh(config, vectors, labels, queries, truth, args.seed))
    rows += run_baselines(skipped, vectors, queries, truth, args)
    print(f"# total {time.perf_counter() - bench_start:.0f}s")

    print()
    print_table(rows, args.top_k)
    winners = [row for row in rows if row.method.startswith("lsh") and row.ie >= 10 and row.recall >= 0.95]
    print()
    print(f"# LSH configurations with IE >= 10 and recall@{args.top_k} >= 0.95: {len(winners)}")
    for row in winners:
        print(f"#   {row.method} {row.params}: recall={row.recall:.3f} IE={row.ie:.1f} p50={row.p50_ms:.2f}ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
