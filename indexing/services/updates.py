"""Incremental updates: an image whose Feature is written is hashed into the active index version at once.

``features_upsert`` (every import, upload and re-embedding goes through it) calls :func:`index_images_add` in its
own transaction: the image's BucketEntry rows are inserted (``ON CONFLICT DO NOTHING``: a retried chunk adds
nothing twice), the ids of the entries that were new are appended to their Bucket rows, and an IndexAddition row
records it, which every serving process reads before its next search (indexing.serving). No rebuild, no reload.

Against a concurrent rebuild: an add and an activation both lock the index name's LSHIndex rows, so an add hashes
into the version that is active once it holds the lock; the activation replays into the new version the additions
of the old one written after the new one's snapshot (``LSHIndex.additions_seen``), under the same lock. An image
added while a version is built therefore ends up in it, once. A deleted image needs nothing here: a search reads
the metadata of its top hits from the Image table, so a deleted image is skipped at once, and the next rebuild
drops its bucket entries.
"""

from __future__ import annotations

import numpy as np
from django.db import connection, transaction
from django.db.models import Max

from indexing.lsh.hashing import HashFamily
from indexing.models import Bucket, BucketEntry, Extractor, Image, IndexAddition, LSHIndex
from indexing.selectors import features_read, index_family
from indexing.serving import additions_written

_FAMILIES: dict[tuple[int, str], HashFamily] = {}  # version (id, created) -> its family: versions never change


def _family(index: LSHIndex) -> HashFamily:
    key = (index.pk, index.created_at.isoformat())
    family = _FAMILIES.get(key)
    if family is None:
        family = _FAMILIES.setdefault(key, index_family(index))
    return family


def additions_marker() -> int:
    """The newest IndexAddition id: a build records it before loading its features (``LSHIndex.additions_seen``)."""
    return int(IndexAddition.objects.aggregate(m=Max("id"))["m"] or 0)


def index_images_add(*, extractor: Extractor, image_ids: np.ndarray, vectors: np.ndarray) -> int:
    """Hash images just embedded by ``extractor`` into each active version over their collections; return the adds.

    Call it inside the transaction that writes their Feature rows (``features_upsert`` does).
    """
    image_ids = np.asarray(image_ids, dtype=np.int64)
    if image_ids.shape[0] == 0:
        return 0
    names = LSHIndex.objects.filter(is_active=True, extractor=extractor).values_list("name", flat=True)
    added = 0
    for name in sorted(set(names)):
        with transaction.atomic():
            # The lock an activation takes too (index_activate): the version found next is the one that stays
            # active until this transaction ends.
            list(LSHIndex.objects.select_for_update().filter(name=name).values_list("pk", flat=True))
            active = LSHIndex.objects.filter(name=name, is_active=True, extractor=extractor).first()
            if active is not None:
                added += version_images_add(index=active, image_ids=image_ids, vectors=vectors)
    return added


def version_images_add(*, index: LSHIndex, image_ids: np.ndarray, vectors: np.ndarray) -> int:
    """Hash the images of ``index``'s collections among ``image_ids`` into that version (caller holds the lock)."""
    collection_ids = list(index.collections.values_list("id", flat=True))
    ours = set(
        Image.objects.filter(pk__in=image_ids.tolist(), collection_id__in=collection_ids).values_list("pk", flat=True)
    )
    keep = np.array([int(i) in ours for i in image_ids], dtype=bool)
    if not keep.any():
        return 0
    ids, rows = image_ids[keep], np.asarray(vectors, dtype=np.float32)[keep]
    keys = _family(index).keys(rows)  # (m, num_tables)
    table_ids = np.array(index.tables.order_by("number").values_list("id", flat=True), dtype=np.int64)
    entries = np.column_stack(
        [np.repeat(table_ids[np.newaxis], ids.shape[0], axis=0).ravel(), keys.ravel(), np.repeat(ids, keys.shape[1])]
    )
    fresh = _entries_insert(entries)
    _buckets_append(fresh)
    IndexAddition.objects.bulk_create(IndexAddition(index=index, image_id=int(i)) for i in ids)
    # This process's next search reads them (others within the additions poll): marked now for a search on this
    # connection inside the transaction, and again at the commit for the other threads.
    additions_written.mark()
    transaction.on_commit(additions_written.mark)
    return int(ids.shape[0])


def _entries_insert(entries: np.ndarray) -> np.ndarray:
    """Insert (table id, key, image id) rows that are not there yet; return those inserted (the others existed)."""
    if connection.vendor == "postgresql":
        sql = (
            f"INSERT INTO {BucketEntry._meta.db_table} (table_id, key, image_id) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) "
            "ON CONFLICT DO NOTHING RETURNING table_id, key, image_id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [entries[:, 0].tolist(), entries[:, 1].tolist(), entries[:, 2].tolist()])
            return np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 3)
    fresh = []
    for table_id, key, image_id in entries.tolist():
        _, created = BucketEntry.objects.get_or_create(table_id=table_id, key=key, image_id=image_id)
        if created:
            fresh.append((table_id, key, image_id))
    return np.array(fresh, dtype=np.int64).reshape(-1, 3)


def _buckets_append(entries: np.ndarray) -> None:
    """Append the image ids of new entries to their Bucket rows (a row is created for a bucket seen first)."""
    if entries.shape[0] == 0:
        return
    order = np.lexsort((entries[:, 2], entries[:, 1], entries[:, 0]))
    entries = entries[order]
    pairs, starts = np.unique(entries[:, :2], axis=0, return_index=True)
    bounds = np.append(starts, entries.shape[0])
    packed = [entries[bounds[b] : bounds[b + 1], 2].astype(">i8").tobytes() for b in range(pairs.shape[0])]
    if connection.vendor == "postgresql":
        sql = (
            f"INSERT INTO {Bucket._meta.db_table} AS b (table_id, key, size, ids) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::integer[], %s::bytea[]) "
            "ON CONFLICT (table_id, key) DO UPDATE SET ids = b.ids || EXCLUDED.ids, size = b.size + EXCLUDED.size"
        )
        sizes = np.diff(bounds).tolist()
        with connection.cursor() as cursor:
            cursor.execute(sql, [pairs[:, 0].tolist(), pairs[:, 1].tolist(), sizes, packed])
        return
    for (table_id, key), ids in zip(pairs.tolist(), packed, strict=True):
        bucket = Bucket.objects.filter(table_id=table_id, key=key).first()
        if bucket is None:
            Bucket.objects.create(table_id=table_id, key=key, size=len(ids) // 8, ids=ids)
        else:
            Bucket.objects.filter(table_id=table_id, key=key).update(
                size=bucket.size + len(ids) // 8, ids=bytes(bucket.ids) + ids
            )


def additions_replay(*, index: LSHIndex) -> int:
    """Hash into a version about to be activated the images added to its name since its snapshot (lock held)."""
    later = (
        IndexAddition.objects.filter(index__name=index.name, id__gt=index.additions_seen)
        .exclude(index=index)
        .values_list("image_id", flat=True)
    )
    image_ids = np.unique(np.fromiter(later, dtype=np.int64))
    if image_ids.shape[0] == 0:
        return 0
    found, vectors = features_read(extractor=index.extractor, image_ids=image_ids)
    return version_images_add(index=index, image_ids=found, vectors=vectors)
