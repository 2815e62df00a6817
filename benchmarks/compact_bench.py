"""How the int8 first pass of a search was sized (``SKETCHSEARCH_SHORTLIST_PER_HIT``), on data it is not reported on.

A served search with many candidates scores them by the vector folder's int8 copy and re-ranks only the best
``per_hit * k`` (at least 100) exactly (indexing.services.search). This measures, for several shortlist sizes, how
much of the exact top k survives it, on synthetic clustered 1,024-d vectors of ANOTHER seed than
scale_bench's (seed 7; scale_bench uses 0) with 10,000 images per cluster, as the 1M benchmark has: every query's
candidates are its whole cluster. Then, for the same candidates, the time of scoring them from float32 rows and
from int8 rows with ``lsh.scan.row_scores`` (in memory, one process). Also prints the folder writer's own check
(``vectorfile.compact_recall``) on these vectors and on sharply peaked class probabilities, where it refuses the copy,
and the same shares on real features: the shipped MobileNetV1's 1,024-d vectors of the 3,200 TU-Berlin-40 sketches
(from the embedding cache train_sketch_head writes; skipped with a message when it is absent).

    .venv/bin/python benchmarks/compact_bench.py          # ~1 min, 0.6 GB
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.lsh_core_bench import make_dataset  # noqa: E402
from indexing.lsh.scan import row_scores  # noqa: E402
from indexing.lsh.vectorfile import compact_recall, compact_rows, compact_scale  # noqa: E402

KEPT = (10, 20, 50, 100, 200, 400)  # shortlist sizes; the product keeps max(100, per_hit * k): 200 at k=10


def peaked(n: int, classes: int, seed: int) -> np.ndarray:
    """L2-normalised softmax outputs with one dominant class each (what a trained head emits)."""
    rng = np.random.default_rng(seed)
    logits = 2 * rng.standard_normal((n, classes))
    logits[np.arange(n), rng.integers(0, classes, n)] += 8
    probabilities = np.exp(logits)
    return (probabilities / np.linalg.norm(probabilities, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--clusters", type=int, default=10, help="n / clusters images per cluster")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--views", type=Path, default=ROOT / "var" / "cache" / "sketch-head-views.npz")
    args = parser.parse_args()
    vectors, labels = make_dataset(args.n, 1024, args.clusters, 0.5, args.seed)
    compact = compact_rows(vectors, compact_scale(vectors))
    rng = np.random.default_rng(args.seed + 1)
    print("share of the exact top k within the exact re-rank of the int8 shortlist, by the shortlist's size:")
    print("| k | " + " | ".join(f"{kept} kept" for kept in KEPT) + " |")
    print("|---|" + "---|" * len(KEPT))
    timings: dict[str, list[float]] = {"float32": [], "int8": []}
    asked = rng.choice(args.n, args.queries, replace=False)
    for k in (10, 20):
        shares: dict[int, list[float]] = {kept: [] for kept in KEPT}
        for position in asked:
            query = vectors[position]
            candidates = np.flatnonzero(labels == labels[position])
            candidates = candidates[candidates != position]
            started = time.perf_counter()
            exact = row_scores(vectors, candidates, query)
            timings["float32"].append(time.perf_counter() - started)
            truth = candidates[np.argsort(-exact, kind="stable")[:k]]
            started = time.perf_counter()
            rough = row_scores(compact, candidates, query)
            timings["int8"].append(time.perf_counter() - started)
            order = np.argsort(-rough, kind="stable")
            for kept in KEPT:
                short = candidates[order[:kept]]
                top = short[np.argsort(-(vectors[short] @ query), kind="stable")[:k]]
                shares[kept].append(np.intersect1d(top, truth).shape[0] / k)
        print(f"| {k} | " + " | ".join(f"{np.mean(shares[kept]):.4f}" for kept in KEPT) + " |")
    size = int(np.mean([np.sum(labels == labels[p]) for p in asked]))
    print(
        f"scoring ~{size:,} candidates (median ms): float32 rows {1000 * np.median(timings['float32']):.2f}, "
        f"int8 rows {1000 * np.median(timings['int8']):.2f}"
    )
    print(f"compact_recall (the folder writer's check): these vectors {compact_recall(vectors, compact):.3f}", end="")
    probabilities = peaked(20_000, 40, args.seed)
    rounded = compact_rows(probabilities, compact_scale(probabilities))
    print(f", 40-class peaked probabilities {compact_recall(probabilities, rounded):.3f}")
    real(args.views, args.seed)


def real(views: Path, seed: int, queries: int = 300) -> None:
    """The shares on the TU-Berlin-40 sketches' backbone vectors, every other sketch a candidate (compact_recall
    over all of them: the share of the exact top 10 within the int8 best ``kept``, which is the share the exact
    re-rank of that shortlist finds)."""
    if not views.exists():
        print(f"real features: skipped, {views} is missing (manage.py train_sketch_head writes it)")
        return
    cache = np.load(views, allow_pickle=True)
    vectors = np.asarray(cache["view_plain"][cache["source"] == "tu"], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    compact = compact_rows(vectors, compact_scale(vectors))
    n = vectors.shape[0]
    shares = {kept: compact_recall(vectors, compact, sample=n, queries=queries, keep=kept, seed=seed) for kept in KEPT}
    print(
        f"real features (MobileNetV1, {n:,} TU-Berlin-40 sketches, {queries} queries), top 10 kept: "
        + ", ".join(f"{shares[kept]:.4f} at {kept}" for kept in KEPT)
        + f"; compact_recall {compact_recall(vectors, compact):.3f}"
    )


if __name__ == "__main__":
    main()
