"""One search: decode + preprocess + embed the sketch, hash, ONE SQL candidate query, Hamming cut, exact re-rank.

The service resolves the index and embeds the query; the core (:meth:`indexing.lsh.index.LshIndex.candidates`)
looks up its buckets; the service filters the candidates (label, domain, the query image itself), optionally cuts
them down to ``SKETCHSEARCH_RERANK_CANDIDATES`` by the Hamming distance of their sign codes, re-ranks by exact cosine
on the version's mapped vectors (and on the images added since its build), reads the metadata of the top k and,
where the index is over the served sketch head, orders them by how alike the drawings look (:func:`look_base`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage

from indexing.features.preprocess import QUERY_DECODE_SIDE, is_blank, load_image, preprocess_sketch
from indexing.features.sketch_head import PHOTO_CLASS
from indexing.features.vectors import vector_from_bytes
from indexing.lsh.codes import shortlist
from indexing.lsh.scan import look_tie_break, row_scores
from indexing.models import Collection, Extractor, Feature, Image, LSHIndex
from indexing.selectors import images_meta, index_get_default
from indexing.services.backbones import SKETCH_HEAD, extractor_backbone, extractor_thins_strokes
from indexing.serving import LoadedIndex, index_cache

MAX_TOP_K = 500
# An uploaded query's pixel cap (SKETCHSEARCH_QUERY_MAX_PIXELS): 4096 x 4096, above any phone photo's 12 MP, so the
# full-size decode a PNG needs stays a few hundred ms and ~170 MB; stored images keep the import cap.
DEFAULT_QUERY_MAX_PIXELS = 4096 * 4096
BLANK_QUERY = "nothing was drawn: the image is blank"
# Search modes: which collections' kind a hit may come from (None: no filter).
DOMAINS: dict[str | None, str | None] = {
    None: None,
    "both": None,
    "sketch": Collection.Kind.SKETCHES.value,
    "photo": Collection.Kind.PHOTOS.value,
}


class SearchError(ValueError):
    """The search cannot be answered as asked (no index, unknown image, bad parameter)."""


@dataclass(frozen=True)
class SearchHit:
    image_id: int
    url: str
    label: str
    score: float
    collection: str
    split: str


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    index: LSHIndex
    scan: bool
    probes: int
    collection_size: int
    candidates: int  # distance computations: distinct candidates re-ranked
    candidates_with_repeats: int  # the paper's count: once per table a candidate was found in
    timings_ms: dict[str, float] = field(default_factory=dict)
    predictions: list[Prediction] = field(default_factory=list)  # the trained classifier's top classes, if any

    @property
    def ie(self) -> float:
        """Improvement in efficiency: scan distance computations / this query's."""
        return self.collection_size / self.candidates if self.candidates else float("inf")

    @property
    def ie_paper(self) -> float:
        return self.collection_size / self.candidates_with_repeats if self.candidates_with_repeats else float("inf")


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(self.timings.get(stage, 0.0) + (now - self._last) * 1000, 3)
        self._last = now


def _resolve_index(index: LSHIndex | int | None) -> LSHIndex:
    if isinstance(index, LSHIndex):
        return index
    if index is None:
        found = index_get_default()
        if found is None:
            raise SearchError("no active index: run `manage.py build_index` (make run does it for the demo)")
        return found
    found = LSHIndex.objects.select_related("extractor").filter(pk=index).first()
    if found is None or found.status != LSHIndex.Status.READY and not found.is_active:
        raise SearchError(f"unknown index {index}")
    return found


PREDICTIONS = 5
RANKED_MARGIN = 4  # candidates put in order per hit asked for (the others are only scored): room for deletions
SCAN_BLOCK = 65536  # rows scored per matrix product by an exact scan
SHORTLIST_FLOOR = 100  # the fewest candidates an int8 first pass keeps for the exact re-rank


def look_base(extractor: Extractor) -> str | None:
    """The base extractor whose vectors order an index's hits by look, or None (no look tie-break).

    The served sketch head retrieves by class probabilities, so every image of the class a drawing is recognised
    as scores about 1; its base backbone's cosine (stored as the base extractor's Feature rows, and computed by
    the same CNN pass for a drawn query) orders the k hits shown (``SKETCHSEARCH_LOOK_WEIGHT``, 0 to switch it off).
    """
    if extractor.head != SKETCH_HEAD or settings.SKETCHSEARCH_LOOK_WEIGHT <= 0:
        return None
    base = (extractor.details or {}).get("base_extractor")
    return str(base) if base else None


def _base_vectors(base: str, ids: list[int]) -> dict[int, np.ndarray]:
    """The stored vectors of ``ids`` by the extractor named ``base`` (those that have one)."""
    rows = Feature.objects.filter(extractor__name=base, image_id__in=ids).values_list("image_id", "vector")
    return {image_id: vector_from_bytes(vector) for image_id, vector in rows}


def _look_ordered(base: str | None, look: list[np.ndarray], hits: list[SearchHit]) -> list[SearchHit]:
    """The hits re-ordered by :func:`~indexing.lsh.scan.look_tie_break`, with its blended scores.

    The same hits the class ranking found, in the order of how alike they look (unchanged without a look).
    """
    if base is None or not look or not hits:
        return hits
    query = look[0]
    stored = _base_vectors(base, [hit.image_id for hit in hits])
    looks = np.full(len(hits), np.nan, dtype=np.float32)
    for position, hit in enumerate(hits):
        vector = stored.get(hit.image_id)
        if vector is not None and vector.shape == query.shape:
            looks[position] = float(vector @ query)
    ids = np.array([hit.image_id for hit in hits], dtype=np.int64)
    ordered, scores = look_tie_break(
        ids, np.array([hit.score for hit in hits]), looks, settings.SKETCHSEARCH_LOOK_WEIGHT
    )
    by_id = {hit.image_id: hit for hit in hits}
    return [replace(by_id[int(i)], score=float(score)) for i, score in zip(ordered, scores, strict=True)]


def _stored_vector(loaded: LoadedIndex, image_id: int) -> np.ndarray | None:
    """A stored image's vector: added since the build, in the version's file, or its Feature row."""
    rows, _ = loaded.additions.rows(np.array([image_id], dtype=np.int64))
    if rows.shape[0]:
        return np.asarray(loaded.additions.vectors[rows[0]])
    rows, _ = loaded.vectors.rows(np.array([image_id], dtype=np.int64))
    if rows.shape[0]:
        return np.asarray(loaded.vectors.vectors[rows[0]])
    feature = Feature.objects.filter(image_id=image_id, extractor=loaded.index.extractor).first()
    return None if feature is None else vector_from_bytes(feature.vector)


def query_vector(
    *,
    loaded: LoadedIndex,
    image: bytes | None,
    image_id: int | None,
    clock: _Clock | None = None,
    predictions: list[Prediction] | None = None,
    look: list[np.ndarray] | None = None,
) -> np.ndarray:
    """The query's L2-normalised vector: an uploaded sketch is embedded; a stored image reuses its vector.

    ``look``, when given, receives the query's base vector for the look tie-break (:func:`look_base`): the base
    pass of an uploaded sketch, or a stored image's base Feature row (nothing when it has none).
    """
    base = look_base(loaded.index.extractor) if look is not None else None
    if image_id is not None:
        stored_vector = _stored_vector(loaded, image_id)
        if stored_vector is not None:
            if base is not None and look is not None:
                look.extend(_base_vectors(base, [image_id]).values())
            return stored_vector
        stored = Image.objects.filter(pk=image_id).first()
        if stored is None:
            raise SearchError(f"unknown image {image_id}")
        with stored.file.open("rb") as handle:
            image = handle.read()
    if image is None:
        raise SearchError("give an image or an image id")
    backbone = extractor_backbone(loaded.index.extractor)
    if clock:
        clock.lap("load")
    # Decoding errors (ImageDecodeError, a ValueError) propagate with their message. An upload is decoded shrunk
    # towards the size the model needs, under the query pixel cap; a blank one is refused rather than searched.
    if image_id is None:
        max_pixels = int(getattr(settings, "SKETCHSEARCH_QUERY_MAX_PIXELS", DEFAULT_QUERY_MAX_PIXELS))
        decoded = load_image(image, max_pixels=max_pixels, max_side=QUERY_DECODE_SIDE)
        if is_blank(decoded):
            raise SearchError(BLANK_QUERY)
    else:
        decoded = load_image(image)
    if clock:
        clock.lap("decode")
    pixels = preprocess_sketch(decoded, backbone.input_size, thin=extractor_thins_strokes(loaded.index.extractor))
    if clock:
        clock.lap("preprocess")
    return _embed(loaded, backbone, pixels, clock, predictions, look if base is not None else None)


def _embed(
    loaded: LoadedIndex,
    backbone: Any,
    pixels: np.ndarray,
    clock: _Clock | None,
    predictions: list[Prediction] | None,
    look: list[np.ndarray] | None,
) -> np.ndarray:
    classes = (loaded.index.extractor.details or {}).get("classes")
    wanted = predictions is not None and classes or look is not None
    if wanted and hasattr(backbone, "embed_and_classify"):
        vectors, probabilities, features = backbone.embed_and_classify(pixels[np.newaxis])
        if look is not None:
            look.append(np.asarray(features[0], dtype=np.float32))
        if predictions is not None and classes and probabilities is not None and probabilities.shape[1] == len(classes):
            drawable = [i for i in np.argsort(-probabilities[0]) if classes[i] != PHOTO_CLASS]  # not a drawn class
            top = drawable[:PREDICTIONS]
            predictions.extend(Prediction(label=str(classes[i]), score=float(probabilities[0, i])) for i in top)
        vector = vectors[0]
    else:
        vector = backbone.embed(pixels[np.newaxis])[0]
    if clock:
        clock.lap("embed")
    return np.asarray(vector, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class _Pool:
    """Candidates split by where their vectors are: rows of the version's file, rows of the additions."""

    file_rows: np.ndarray
    added_rows: np.ndarray

    @property
    def size(self) -> int:
        return int(self.file_rows.shape[0] + self.added_rows.shape[0])

    def take(self, keep_file: np.ndarray, keep_added: np.ndarray) -> _Pool:
        return _Pool(self.file_rows[keep_file], self.added_rows[keep_added])


def _pool_of(loaded: LoadedIndex, ids: np.ndarray | None) -> _Pool:
    """The candidates ``ids`` (None: every image of the version); an added image's newest vector wins."""
    additions = loaded.additions
    if ids is None:
        _, replaced = loaded.vectors.rows(additions.ids)
        file_rows = np.arange(loaded.vectors.size, dtype=np.int64)
        if replaced.any():
            stale, _ = loaded.vectors.rows(additions.ids[replaced])
            file_rows = np.setdiff1d(file_rows, stale, assume_unique=True)
        return _Pool(file_rows, np.arange(additions.size, dtype=np.int64))
    added_rows, added = additions.rows(ids)
    file_rows, _ = loaded.vectors.rows(ids[~added])
    return _Pool(file_rows, added_rows)


def _filtered(loaded: LoadedIndex, pool: _Pool, *, label: str | None, kind: str | None, exclude: int | None) -> _Pool:
    """The candidates of one label, of one collection kind, and without the query image itself."""
    stored, additions = loaded.vectors, loaded.additions
    keep_file = np.ones(pool.file_rows.shape[0], dtype=bool)
    keep_added = np.ones(pool.added_rows.shape[0], dtype=bool)
    if label:
        keep_file &= stored.labels[pool.file_rows] == stored.label_code(label)
        keep_added &= additions.labels[pool.added_rows] == label
    if kind is not None:
        keep_file &= stored.kinds[pool.file_rows] == stored.kind_code(kind)
        keep_added &= additions.kinds[pool.added_rows] == kind
    if exclude is not None:
        keep_file &= stored.ids[pool.file_rows] != exclude
        keep_added &= additions.ids[pool.added_rows] != exclude
    return pool.take(keep_file, keep_added)


def _hamming_cut(loaded: LoadedIndex, pool: _Pool, vector: np.ndarray, keep: int) -> _Pool:
    """The ``keep`` candidates whose sign codes are nearest the query's (all of them if there are fewer)."""
    if pool.size <= keep:
        return pool
    query_code = loaded.vectors.coder.encode(vector[np.newaxis])[0]
    codes = np.concatenate([loaded.vectors.codes[pool.file_rows], loaded.additions.codes[pool.added_rows]])
    chosen = shortlist(codes, query_code, keep)
    split = pool.file_rows.shape[0]
    return _Pool(pool.file_rows[chosen[chosen < split]], pool.added_rows[chosen[chosen >= split] - split])


def shortlist_size(top_k: int) -> int | None:
    """How many candidates the int8 first pass keeps for ``top_k`` hits (None: it is switched off)."""
    per_hit = settings.SKETCHSEARCH_SHORTLIST_PER_HIT
    return max(SHORTLIST_FLOOR, per_hit * top_k) if per_hit > 0 else None


def _ranked(
    loaded: LoadedIndex,
    pool: _Pool,
    vector: np.ndarray,
    *,
    scan: bool,
    best: int | None = None,
    shortlist: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, scores)`` of the pool by exact cosine, best first (ties by id); only the ``best`` first if given.

    With ``best``, the candidates scoring at least the ``best``-th score are sorted and the rest dropped, so ties
    at the cut are all kept and the order is the full sort's (ordering 10,000 candidates costs more than scoring
    them; a scan's million far more). With ``shortlist``, more of the version file's candidates than that are
    scored first by their int8 rows (the folder's compact copy) and only the ``shortlist`` best of those re-ranked
    exactly (an addition is always scored exactly); the ids of the others are not returned.
    """
    stored, additions = loaded.vectors, loaded.additions
    file_rows = pool.file_rows
    if scan:  # every row: one pass over the mapped matrix in blocks, without gathering it
        every = np.empty(stored.size, dtype=np.float32)
        for start in range(0, stored.size, SCAN_BLOCK):
            every[start : start + SCAN_BLOCK] = stored.vectors[start : start + SCAN_BLOCK] @ vector
        file_scores = every[file_rows]
    else:
        compact = stored.compact_usable
        if shortlist is not None and compact is not None and file_rows.shape[0] > shortlist:
            rough = row_scores(compact, file_rows, vector)
            kept = np.argpartition(rough, file_rows.shape[0] - shortlist)[file_rows.shape[0] - shortlist :]
            file_rows = file_rows[np.sort(kept)]  # ascending rows read the mapped file in order
        file_scores = row_scores(stored.vectors, file_rows, vector)
    ids = np.concatenate([stored.ids[file_rows], additions.ids[pool.added_rows]])
    scores = np.concatenate([file_scores, additions.vectors[pool.added_rows] @ vector]).astype(np.float32)
    if best is not None and scores.shape[0] > best:
        cut = np.partition(scores, scores.shape[0] - best)[scores.shape[0] - best]  # the best-th largest
        keep = np.flatnonzero(scores >= cut)
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]


def _hydrated(ids: np.ndarray, scores: np.ndarray, top_k: int) -> list[SearchHit]:
    """The top ``top_k`` hits with their metadata, read for them only; an image deleted since is skipped."""
    hits: list[SearchHit] = []
    start = 0
    while len(hits) < top_k and start < ids.shape[0]:
        batch = ids[start : start + 2 * top_k].tolist()
        meta = images_meta(batch)
        for hit_id, score in zip(batch, scores[start : start + len(batch)].tolist(), strict=True):
            if hit_id in meta and len(hits) < top_k:
                found = meta[hit_id]
                url = default_storage.url(found.file)
                hits.append(SearchHit(hit_id, url, found.label, float(score), found.collection, found.split))
        start += len(batch)
    return hits


def _check(*, domain: str | None, top_k: int, probes: int | None) -> None:
    if domain not in DOMAINS:
        raise SearchError(f"domain must be one of {', '.join(d for d in DOMAINS if d)}, got {domain!r}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise SearchError(f"k must be between 1 and {MAX_TOP_K}, got {top_k}")
    if probes is not None and probes < 0:
        raise SearchError(f"probes must be >= 0, got {probes}")


def sketch_search(
    *,
    image: bytes | None = None,
    image_id: int | None = None,
    index: LSHIndex | int | None = None,
    top_k: int = 20,
    probes: int | None = None,
    label: str | None = None,
    scan: bool = False,
    domain: str | None = None,
) -> SearchResult:
    """Search the index (or scan all its images) with a sketch or a stored image; best hits first.

    ``probes`` left out is the index's own (tuned when it was built, ``LSHIndex.probes``), and a query whose
    buckets then hold fewer than ``SKETCHSEARCH_MIN_CANDIDATES`` images probes further; explicit probes are taken
    as given. ``domain`` keeps only images of ``"sketch"`` collections or of ``"photo"`` collections (by the
    collection's kind; images of "mixed" collections match neither); ``"both"`` or ``None`` keeps everything.
    """
    _check(domain=domain, top_k=top_k, probes=probes)
    clock = _Clock()
    resolved = _resolve_index(index)
    loaded = index_cache.get(resolved)
    loaded.refresh()
    clock.lap("load")
    predictions: list[Prediction] = []
    base = look_base(resolved.extractor)
    look: list[np.ndarray] = []
    vector = query_vector(
        loaded=loaded, image=image, image_id=image_id, clock=clock, predictions=predictions, look=look
    )
    n = loaded.size
    if scan:
        pool, with_repeats, used = _pool_of(loaded, None), n, resolved.probes if probes is None else probes
    else:

        def timed_lookup(pairs: np.ndarray) -> np.ndarray:
            clock.lap("hash")  # the probe keys of this round were just computed
            found = loaded.lsh.store.lookup(pairs)
            clock.lap("sql")
            return found

        floor = min(settings.SKETCHSEARCH_MIN_CANDIDATES, n) if probes is None else 0
        start = resolved.probes if probes is None else probes
        found = loaded.lsh.candidates(vector, start, floor, lookup=timed_lookup)
        pool, with_repeats, used = _pool_of(loaded, found.ids), found.with_repeats, found.probes
    candidates = pool.size
    pool = _filtered(loaded, pool, label=label, kind=DOMAINS[domain], exclude=image_id)
    clock.lap("filter")
    if not scan and settings.SKETCHSEARCH_RERANK_CANDIDATES > 0:
        pool = _hamming_cut(loaded, pool, vector, settings.SKETCHSEARCH_RERANK_CANDIDATES)
    shortlist = None if scan else shortlist_size(top_k)
    ids, scores = _ranked(loaded, pool, vector, scan=scan, best=RANKED_MARGIN * top_k, shortlist=shortlist)
    clock.lap("rerank")
    hits = _hydrated(ids, scores, top_k)
    if len(hits) < top_k and ids.shape[0] < pool.size:  # most of the best were deleted since: rank them all exactly
        hits = _hydrated(*_ranked(loaded, pool, vector, scan=scan), top_k)
    clock.lap("fetch")
    if base is not None:
        hits = _look_ordered(base, look, hits)
        clock.lap("look")
    return SearchResult(
        hits=hits,
        index=resolved,
        scan=scan,
        probes=used,
        collection_size=n,
        candidates=candidates,
        candidates_with_repeats=with_repeats,
        timings_ms=clock.timings,
        predictions=predictions,
    )
