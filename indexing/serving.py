"""The per-process serving state: each index version loaded once per process, and the warm-up at process start."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from indexing.lsh.hashing import HashFamily
from indexing.models import LSHIndex
from indexing.selectors import FeatureMatrix, ImageMeta, features_load, images_meta, index_family, index_get_active
from indexing.stores import OrmBucketStore


@dataclass(frozen=True, eq=False)
class LoadedIndex:
    """What a process keeps per index version: its hash family, bucket store, re-rank matrix, result metadata."""

    index: LSHIndex
    family: HashFamily
    store: OrmBucketStore
    matrix: FeatureMatrix
    meta: dict[int, ImageMeta]


class _IndexCache:
    """Per-process cache of loaded index versions; a version is immutable once ready, so it never goes stale."""

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._loaded: dict[int, LoadedIndex] = {}

    def get(self, index: LSHIndex) -> LoadedIndex:
        with self._lock:
            hit = self._loaded.get(index.pk)
        if hit is not None:
            return hit
        collection_ids = list(index.collections.values_list("id", flat=True))
        loaded = LoadedIndex(
            index=index,
            family=index_family(index),
            store=OrmBucketStore(list(index.tables.order_by("number").values_list("id", flat=True))),
            matrix=features_load(extractor=index.extractor, collection_ids=collection_ids),
            meta=images_meta(collection_ids),
        )
        with self._lock:
            self._loaded[index.pk] = loaded
            while len(self._loaded) > self._size:  # drop the oldest version (dicts keep insertion order)
                self._loaded.pop(next(iter(self._loaded)))
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


index_cache = _IndexCache()


def index_warm_up(*, name: str = "default") -> LSHIndex | None:
    """Load the active index and its extractor into this process (gunicorn post_fork, celery worker init)."""
    from indexing.services.backbones import extractor_backbone

    active = index_get_active(name=name)
    if active is not None:
        index_cache.get(active)
        extractor_backbone(active.extractor)
    return active
