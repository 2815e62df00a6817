"""The per-process serving state of index versions: what a web or worker process holds to answer searches.

Per version a process keeps its hash family and bucket store (an :class:`~indexing.lsh.index.LshIndex` over the
ORM store), the version's vector folder mapped read-only (:mod:`indexing.lsh.vectorfile`: the pages are shared by
every process of the machine, not copied into each) and the images added since the build (:class:`Additions`,
read from IndexAddition rows before each search). Result metadata is not kept here: a search reads it for its
top k only (indexing.services.search).
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings

from indexing.features.vectors import vector_from_bytes
from indexing.lsh.codes import SignCodes
from indexing.lsh.index import LshIndex
from indexing.lsh.vectorfile import VectorFile, sorted_rows, vector_file_open, vector_file_write
from indexing.models import LSHIndex
from indexing.selectors import FeatureMatrix, additions_read, features_load, index_family, index_get_active
from indexing.stores import OrmBucketStore

logger = logging.getLogger(__name__)


def vector_folder(index: LSHIndex) -> Path:
    """The folder of a version's vectors: named by its id and creation time (ids can be reused by a test database)."""
    stamp = hashlib.sha1(f"{index.pk}:{index.created_at.isoformat()}".encode()).hexdigest()[:10]
    return Path(settings.SKETCHSEARCH_VECTOR_DIR) / f"index-{index.pk}-{stamp}"


def vector_file_build(index: LSHIndex, *, matrix: FeatureMatrix | None = None) -> VectorFile:
    """Write a version's vector folder from its Feature rows (or from the matrix the build already loaded)."""
    if matrix is None:
        collection_ids = list(index.collections.values_list("id", flat=True))
        matrix = features_load(extractor=index.extractor, collection_ids=collection_ids)
    center = vector_from_bytes(index.center) if index.center is not None else None
    coder = SignCodes.draw(matrix.vectors.shape[1], seed=int(index.seed), center=center)
    kinds = matrix.kinds if matrix.kinds is not None else np.full(matrix.image_ids.shape[0], "", dtype=str)
    return vector_file_write(
        vector_folder(index),
        ids=matrix.image_ids,
        vectors=matrix.vectors,
        labels=matrix.labels.tolist(),
        kinds=kinds.tolist(),
        coder=coder,
    )


def vector_folders_prune() -> list[str]:
    """Delete this machine's vector folders of versions that no longer exist (deleted on another machine)."""
    root = Path(settings.SKETCHSEARCH_VECTOR_DIR)
    if not root.is_dir():
        return []
    wanted = {vector_folder(index).name for index in LSHIndex.objects.only("pk", "created_at")}
    removed = []
    for folder in root.iterdir():
        if folder.is_dir() and folder.name.startswith("index-") and folder.name not in wanted:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def vector_file_get(index: LSHIndex) -> VectorFile:
    """The version's mapped vectors; written from the Feature rows first when the folder is missing or unreadable."""
    folder = vector_folder(index)
    try:
        return vector_file_open(folder)
    except (FileNotFoundError, ValueError) as error:
        if folder.exists():
            logger.warning("rewriting the vector folder of index %s: %s", index.pk, error)
            shutil.rmtree(folder, ignore_errors=True)
        return vector_file_build(index)


@dataclass(eq=False)
class Additions:
    """The images hashed into a version after its build, as this process last read them (newest vector wins)."""

    ids: np.ndarray  # ascending
    vectors: np.ndarray
    codes: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    last_id: int = 0  # the newest IndexAddition read

    @classmethod
    def empty(cls, dim: int, words: int) -> Additions:
        """No additions, shaped for vectors of ``dim`` and codes of ``words``."""
        return cls(
            ids=np.empty(0, dtype=np.int64),
            vectors=np.empty((0, dim), dtype=np.float32),
            codes=np.empty((0, words), dtype=np.uint64),
            labels=np.empty(0, dtype=str),
            kinds=np.empty(0, dtype=str),
        )

    @property
    def size(self) -> int:
        """Number of images added (each once)."""
        return int(self.ids.shape[0])

    def merged(
        self, ids: np.ndarray, vectors: np.ndarray, codes: np.ndarray, labels: np.ndarray, kinds: np.ndarray, last: int
    ) -> Additions:
        """These additions with newer rows: a re-added image keeps only its newest vector."""
        all_ids = np.concatenate([self.ids, ids])
        all_vectors = np.concatenate([self.vectors, vectors])
        all_codes = np.concatenate([self.codes, codes])
        all_labels = np.concatenate([self.labels, labels])
        all_kinds = np.concatenate([self.kinds, kinds])
        # np.unique keeps the first of equal ids: look at the rows newest first.
        reverse = np.arange(all_ids.shape[0])[::-1]
        _, first = np.unique(all_ids[reverse], return_index=True)
        keep = reverse[first]  # ascending by id
        return Additions(all_ids[keep], all_vectors[keep], all_codes[keep], all_labels[keep], all_kinds[keep], last)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found)`` as :meth:`VectorFile.rows`."""
        return sorted_rows(self.ids, ids)


class _Writes:
    """Counts the additions this process wrote, so that its own next search reads them without waiting a poll."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def mark(self) -> None:
        with self._lock:
            self.count += 1


additions_written = _Writes()


@dataclass(eq=False)
class LoadedIndex:
    """What a process keeps per index version: the core index over the ORM store, the mapped vectors, additions."""

    index: LSHIndex
    lsh: LshIndex
    vectors: VectorFile
    additions: Additions
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _polled_at: float = -math.inf  # time.monotonic() of the last read of the additions
    _writes_seen: int = -1  # additions_written.count at that read
    populated: threading.Event = field(default_factory=threading.Event)  # set once the mapped pages are in

    @property
    def size(self) -> int:
        """Images this version answers with: the built ones and those added since (not counting re-embeds twice)."""
        _, in_file = self.vectors.rows(self.additions.ids)
        return self.vectors.size + int((~in_file).sum())

    def refresh(self, *, force: bool = False) -> Additions:
        """Read the additions this process has not seen yet (one indexed query, usually returning nothing).

        Read at most every ``SKETCHSEARCH_ADDITIONS_POLL_MS`` (and at once after this process wrote one, or when
        ``force``): a search does not pay a round trip that almost always returns nothing.
        """
        current = self.additions
        now, writes = time.monotonic(), additions_written.count
        poll = settings.SKETCHSEARCH_ADDITIONS_POLL_MS / 1000
        if not force and writes == self._writes_seen and now - self._polled_at < poll:
            return current
        self._polled_at, self._writes_seen = now, writes
        rows = additions_read(index_id=self.index.pk, extractor=self.index.extractor, after=current.last_id)
        if rows is None:
            return current
        ids, vectors, labels, kinds, last = rows
        with self._lock:
            if self.additions.last_id >= last:  # another thread read them meanwhile
                return self.additions
            fresh = self.additions.merged(ids, vectors, self.vectors.coder.encode(vectors), labels, kinds, last)
            self.additions = fresh
        return fresh


def index_load(index: LSHIndex) -> LoadedIndex:
    """Load a version for serving: its family and tables from the database, its vectors mapped from disk."""
    store = OrmBucketStore(list(index.tables.order_by("number").values_list("id", flat=True)))
    vectors = vector_file_get(index)
    vector_folders_prune()  # a version is loaded rarely (start, flip): the moment to drop retired versions' folders
    lsh = LshIndex(index_family(index), store)
    loaded = LoadedIndex(index, lsh, vectors, Additions.empty(vectors.dim, vectors.coder.words))
    loaded.refresh(force=True)
    threading.Thread(target=_populate, args=(loaded,), name=f"populate-{index.pk}", daemon=True).start()
    return loaded


def _populate(loaded: LoadedIndex) -> None:
    """Fault a version's mapped pages into this process in the background (VectorFile.populate)."""
    try:
        _, locked = loaded.vectors.populate(lock=settings.SKETCHSEARCH_LOCK_VECTORS)
        if settings.SKETCHSEARCH_LOCK_VECTORS and not locked:
            logger.warning(
                "the vectors of index %s are mapped but not locked in memory (raise RLIMIT_MEMLOCK, or set "
                "SKETCHSEARCH_LOCK_VECTORS=0): the kernel may evict them and searches then read them from disk",
                loaded.index.pk,
            )
    except Exception:  # a folder deleted meanwhile, say: searches fault the pages in themselves
        logger.warning("could not populate the vector folder %s", loaded.vectors.path, exc_info=True)
    finally:
        loaded.populated.set()


class _IndexCache:
    """Per-process cache of loaded index versions (the two newest: a flip serves the old one until it is done)."""

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._loaded: dict[int, LoadedIndex] = {}

    def get(self, index: LSHIndex) -> LoadedIndex:
        with self._lock:
            hit = self._loaded.get(index.pk)
        if hit is not None:
            return hit
        loaded = index_load(index)
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
