"""The bucket lookup on a hash-partitioned copy of Bucket, against the table as it is (docs/scaling.md).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/sketchsearch_bench .venv/bin/python benchmarks/partition_sim.py

Takes the active ``scale-*`` index that ``scale_bench.py`` built, copies its Bucket rows into a table
``PARTITION BY HASH (table_id)`` with ``--partitions`` partitions (each with its own primary key), then times the
search's one lookup statement (the same ``unnest ... JOIN ... string_agg``) on both, for the probe keys of
``--queries`` images of the collection, and checks that both return the same ids. The copy is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOOKUP = (
    "SELECT string_agg(b.ids, ''::bytea) FROM unnest(%b::bigint[], %b::bigint[]) AS q (table_id, key) "
    "JOIN {table} AS b ON b.table_id = q.table_id AND b.key = q.key"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sketchsite.settings")
    import django

    django.setup()
    import psycopg
    from django.db import connection

    from indexing.models import Bucket, LSHIndex
    from indexing.serving import index_cache

    if connection.vendor != "postgresql":
        raise SystemExit("needs PostgreSQL: set DATABASE_URL=postgres://...")
    index = LSHIndex.objects.filter(name__startswith="scale-", is_active=True).order_by("-item_count").first()
    if index is None:
        raise SystemExit("no scale-* index: run benchmarks/scale_bench.py first")
    loaded = index_cache.get(index)
    table_ids = loaded.lsh.store.table_ids  # type: ignore[attr-defined]
    rng = np.random.default_rng(3)
    queries = rng.choice(loaded.vectors.ids, size=args.queries, replace=False)
    pairs: list[tuple[list[int], list[int]]] = []
    for image_id in queries:
        rows, _ = loaded.vectors.rows(np.array([image_id]))
        keys = loaded.lsh.family.probe_keys(np.asarray(loaded.vectors.vectors[rows[0]]), index.probes)
        tables = np.repeat(table_ids, keys.shape[1])
        pairs.append((tables.tolist(), keys.ravel().tolist()))
    source = Bucket._meta.db_table
    with connection.cursor() as wrapper:
        raw = wrapper.cursor.connection
        started = time.perf_counter()
        raw.execute("DROP TABLE IF EXISTS bucket_partitioned")
        raw.execute(
            "CREATE TABLE bucket_partitioned (table_id bigint, key bigint, size integer, ids bytea, "
            "PRIMARY KEY (table_id, key)) PARTITION BY HASH (table_id)"
        )
        for remainder in range(args.partitions):
            raw.execute(
                f"CREATE TABLE bucket_partitioned_{remainder} PARTITION OF bucket_partitioned "
                f"FOR VALUES WITH (MODULUS {args.partitions}, REMAINDER {remainder})"
            )
        raw.execute(
            f"INSERT INTO bucket_partitioned SELECT table_id, key, size, ids FROM {source} WHERE table_id = ANY(%s)",
            [table_ids.tolist()],
        )
        raw.execute("ANALYZE bucket_partitioned")
        copy_s = time.perf_counter() - started
        results = {}
        for table in (source, "bucket_partitioned"):
            seconds, found = [], []
            with psycopg.Cursor(raw) as cursor:
                for table_list, key_list in pairs * 2:  # the first pass warms the cache, the second is timed
                    started = time.perf_counter()
                    cursor.execute(LOOKUP.format(table=table), [table_list, key_list], binary=True)
                    row = cursor.fetchone()
                    seconds.append(time.perf_counter() - started)
                    packed = row[0] if row is not None and row[0] is not None else b""
                    found.append(np.sort(np.frombuffer(packed, dtype=">i8")))
            timed = np.array(seconds[len(pairs) :]) * 1000
            results[table] = (timed, found[len(pairs) :])
        raw.execute("DROP TABLE bucket_partitioned")
    same = all(np.array_equal(a, b) for a, b in zip(results[source][1], results["bucket_partitioned"][1], strict=True))
    print(f"index {index} ({index.item_count:,} images), {len(pairs[0][0])} buckets per lookup; copy {copy_s:.1f} s")
    print("| table | p50 ms | p95 ms |\n|---|---|---|")
    for table, (timed, _) in results.items():
        label = f"{table} ({args.partitions} hash partitions)" if table == "bucket_partitioned" else table
        print(f"| {label} | {np.percentile(timed, 50):.2f} | {np.percentile(timed, 95):.2f} |")
    print(f"same ids from both: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
