"""Build, activate, inspect and cache LSH index versions (DESIGN.md: persistence of indexing.lsh)."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from indexing.features.vectors import vector_to_bytes
from indexing.lsh.autotune import DEFAULT_TARGET_RECALL, autotune
from indexing.lsh.hashing import family_params, fit_center, make_family
from indexing.lsh.stats import BucketStats, bucket_stats
from indexing.models import Bucket, BucketEntry, Collection, Extractor, HashTable, LSHIndex
from indexing.selectors import features_load, index_get_active
from indexing.services.updates import additions_marker, additions_replay
from indexing.serving import vector_file_build, vector_folder
from indexing.stores import bucket_entries_write, buckets_write

# The one set of build defaults the build_index command, index_build_task and setup_demo share: SimHash, centred
# on the collection mean, L, K and probes tuned (indexing.lsh.autotune) unless given.
DEFAULT_FAMILY = "binary"
DEFAULT_CENTER = True


@transaction.atomic
def index_activate(*, index: LSHIndex) -> LSHIndex:
    """Make ``index`` the active version of its name, in one transaction; searches see old or new, never both.

    The version it replaces is kept (retired) for searches that already resolved it; older retired versions are
    deleted once they have been retired for ``SKETCHSEARCH_RETIRED_INDEX_GRACE_SECONDS`` (until then a search
    that resolved one just before several quick flips still finds its rows).
    """
    if index.status != LSHIndex.Status.READY and not index.is_active:
        raise ValueError(f"index {index.pk} is {index.status}, only a ready index can be activated")
    # Lock the name's rows (evaluated: a lazy queryset would lock nothing) so concurrent flips serialise.
    list(LSHIndex.objects.select_for_update().filter(name=index.name).values_list("pk", flat=True))
    additions_replay(index=index)  # images added to the name while this version was built
    previous = list(LSHIndex.objects.filter(name=index.name, is_active=True).exclude(pk=index.pk))
    now = timezone.now()
    LSHIndex.objects.filter(pk__in=[p.pk for p in previous]).update(
        is_active=False, status=LSHIndex.Status.RETIRED, retired_at=now
    )
    LSHIndex.objects.filter(pk=index.pk).update(is_active=True, retired_at=None)
    grace = timedelta(seconds=settings.SKETCHSEARCH_RETIRED_INDEX_GRACE_SECONDS)
    stale = (
        LSHIndex.objects.filter(name=index.name, status=LSHIndex.Status.RETIRED)
        .exclude(pk__in=[p.pk for p in previous])
        .filter(Q(retired_at__isnull=True) | Q(retired_at__lte=now - grace))
    )
    for old in stale:
        index_delete(index=old)
    index.refresh_from_db()
    return index


def index_delete(*, index: LSHIndex) -> None:
    """Delete a version: its bucket rows (one DELETE per table), its row and this machine's vector folder."""
    BucketEntry.objects.filter(table__index=index).delete()
    Bucket.objects.filter(table__index=index).delete()
    folder = vector_folder(index)
    index.delete()
    shutil.rmtree(folder, ignore_errors=True)


def index_build(
    *,
    extractor: Extractor,
    collections: list[Collection],
    family: str,
    num_tables: int | None = None,
    hashes_per_table: int | None = None,
    probes: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    params: dict[str, Any] | None = None,  # the family's own, e.g. {"w": 2.0} (indexing.lsh.hashing.family_params)
    seed: int = 0,
    center: bool = False,
    name: str = "default",
    activate: bool = True,
) -> LSHIndex:
    """Hash every feature of ``extractor`` over ``collections`` into a new index version.

    Parameters left out are chosen from the collection (:func:`indexing.lsh.autotune.autotune` on a sample of its
    own vectors as queries, towards ``target_recall`` at k = 10): L and K when either is missing (over the
    default grid), the probes for the given (L, K) when only ``probes`` is missing. The chosen probes are stored
    with the index and are what a search that names none uses.
    """
    started = time.perf_counter()
    seen = additions_marker()  # before the features are read: later additions are replayed at the activation
    own = family_params(family, **(params or {}))  # the family's own parameters, as the row stores them
    matrix = features_load(extractor=extractor, collection_ids=[c.pk for c in collections])
    if matrix.image_ids.shape[0] == 0:
        names = ", ".join(c.name for c in collections)
        raise ValueError(f"no {extractor.name} features for collections {names}: run extract_features first")
    num_tables, hashes_per_table, probes, tuning = _parameters_choose(
        matrix.vectors, family, num_tables, hashes_per_table, probes, target_recall, center, seed, own
    )
    mean = fit_center(matrix.vectors) if center else None
    hasher = make_family(
        family,
        matrix.vectors.shape[1],
        num_tables=num_tables,
        hashes_per_table=hashes_per_table,
        **own,
        seed=seed,
        center=mean,
    )
    keys = hasher.keys(matrix.vectors)  # (n, num_tables)
    with transaction.atomic():
        version = (LSHIndex.objects.filter(name=name).aggregate(v=Max("version"))["v"] or 0) + 1
        index = LSHIndex.objects.create(
            name=name,
            version=version,
            extractor=extractor,
            family=family,
            num_tables=num_tables,
            hashes_per_table=hashes_per_table,
            params=own,
            seed=seed,
            center=vector_to_bytes(mean) if mean is not None else None,
            probes=probes,
            tuning=tuning,
            item_count=int(matrix.image_ids.shape[0]),
            additions_seen=seen,
        )
        index.collections.set(collections)
        tables = HashTable.objects.bulk_create(
            HashTable(index=index, number=t, params=hasher.table_params(t)) for t in range(num_tables)
        )
        _buckets_write(np.array([t.pk for t in tables], dtype=np.int64), keys, matrix.image_ids)
    _tables_analyse()
    vector_file_build(index, matrix=matrix)  # the vectors every process of this machine maps
    index.status = LSHIndex.Status.READY
    index.built_at = timezone.now()
    index.build_seconds = time.perf_counter() - started
    index.save(update_fields=["status", "built_at", "build_seconds"])
    if activate:
        index = index_activate(index=index)
    return index


def _buckets_write(table_ids: np.ndarray, keys: np.ndarray, image_ids: np.ndarray) -> None:
    """Write a version's BucketEntry and Bucket rows: ``keys`` ``(n, L)`` of ``image_ids`` in tables ``table_ids``."""
    num_tables = table_ids.shape[0]
    rows_table = np.repeat(table_ids, keys.shape[0])
    rows_key = keys.T.ravel()
    rows_image = np.tile(image_ids, num_tables)
    # Sorted by (table, key, image): buckets_write packs each run of one bucket into one row, and the entries'
    # COPY appends to their (table, key, image) B-tree instead of inserting all over it.
    order = np.lexsort((rows_image, rows_key, rows_table))
    rows_table, rows_key, rows_image = rows_table[order], rows_key[order], rows_image[order]
    bucket_entries_write(rows_table, rows_key, rows_image)
    buckets_write(rows_table, rows_key, rows_image)  # what searches read: one row per bucket


def _parameters_choose(
    vectors: np.ndarray,
    family: str,
    num_tables: int | None,
    hashes_per_table: int | None,
    probes: int | None,
    target_recall: float,
    center: bool,
    seed: int,
    own: dict[str, Any],
) -> tuple[int, int, int, dict[str, Any] | None]:
    """``(L, K, probes, tuning)``: those given, the others tuned on the collection (tuning None: all given)."""
    if num_tables is not None and hashes_per_table is not None and probes is not None:
        return num_tables, hashes_per_table, probes, None
    if vectors.shape[0] < 2:
        return num_tables or 1, hashes_per_table or 1, probes or 0, None
    grid = None if num_tables is None or hashes_per_table is None else [(num_tables, hashes_per_table)]
    tuned = autotune(vectors, family=family, target_recall=target_recall, grid=grid, center=center, seed=seed, **own)
    tuning = tuned.as_dict()
    # What the tuning chose (a rebuild chooses the same again) and what was given.
    chose = ["probes"] if probes is None else []
    tuning["tuned"] = chose if grid is not None else ["num_tables", "hashes_per_table", *chose]
    chosen_probes = tuned.chosen.probes if probes is None else probes
    return tuned.chosen.num_tables, tuned.chosen.hashes_per_table, chosen_probes, tuning


def _tables_analyse() -> None:
    if connection.vendor == "postgresql":
        # Fresh statistics, so the planner probes the (table, key) primary keys; VACUUM also sets the hint bits
        # and visibility map of the new pages, which the first searches would otherwise pay for (measured at 1M
        # on BucketEntry lookups: p50 19-25 ms before, 13-17 ms after). VACUUM cannot run inside a transaction:
        # a build called within one (a test) only analyses.
        command = "ANALYZE" if connection.in_atomic_block else "VACUUM (ANALYZE)"
        with connection.cursor() as cursor:
            cursor.execute(f"{command} {BucketEntry._meta.db_table}, {Bucket._meta.db_table}")


def index_reindex(*, extractor: Extractor | None = None, name: str = "default") -> LSHIndex | None:
    """Rebuild the active index of ``name`` over its collections, and flip it active.

    The parameters that were tuned are tuned again on the collection as it is now (towards the same target
    recall); those given by hand are kept. Searches running meanwhile are answered from the
    old complete version; None when no index is active (or its extractor is not ``extractor``).
    """
    active = index_get_active(name=name)
    if active is None or (extractor is not None and active.extractor_id != extractor.pk):
        return None
    tuned = set((active.tuning or {}).get("tuned", []))
    return index_build(
        extractor=active.extractor,
        collections=list(active.collections.all()),
        family=active.family,
        num_tables=None if "num_tables" in tuned else active.num_tables,
        hashes_per_table=None if "hashes_per_table" in tuned else active.hashes_per_table,
        probes=None if "probes" in tuned else active.probes,
        target_recall=float((active.tuning or {}).get("target_recall", DEFAULT_TARGET_RECALL)),
        params=active.params,
        seed=active.seed,
        center=active.center is not None,
        name=name,
    )


def index_stats(*, index: LSHIndex) -> BucketStats:
    """The paper's bucket statistics, from a GROUP BY (table, key, label) over the stored buckets."""
    rows = list(
        BucketEntry.objects.filter(table__index=index)
        .values("table__number", "key", "image__label")
        .annotate(count=Count("image"))
        .values_list("table__number", "key", "image__label", "count")
    )
    if not rows:
        raise ValueError(f"index {index.pk} has no bucket entries")
    # Expand the grouped counts back to one (table-key, label) per item, the input bucket_stats expects.
    counts = np.array([r[3] for r in rows], dtype=np.int64)
    tables = np.array([r[0] for r in rows], dtype=np.int64).repeat(counts)
    keys = np.array([r[1] for r in rows], dtype=np.int64).repeat(counts)
    labels = np.array([r[2] for r in rows], dtype=str).repeat(counts)
    return bucket_stats_by_table(tables, keys, labels)


def bucket_stats_by_table(tables: np.ndarray, keys: np.ndarray, labels: np.ndarray) -> BucketStats:
    """bucket_stats() for entries given as flat (table, key, label) triples."""
    # bucket_stats takes an (n, L) key matrix; a single column of globally unique bucket ids is equivalent.
    combined = np.unique(np.column_stack([tables, keys]), axis=0, return_inverse=True)[1].reshape(-1, 1)
    return bucket_stats(combined, labels)
