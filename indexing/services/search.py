"""One search: decode + preprocess + embed the sketch, hash, ONE SQL candidate query, exact re-rank."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage

from indexing.features.preprocess import QUERY_DECODE_SIDE, is_blank, load_image, preprocess_sketch
from indexing.lsh.index import probe_until
from indexing.lsh.scan import cosine_top_k, rerank
from indexing.models import Collection, Feature, Image, LSHIndex
from indexing.services.backbones import extractor_backbone
from indexing.selectors import index_get_default
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


def query_vector(
    *,
    loaded: LoadedIndex,
    image: bytes | None,
    image_id: int | None,
    clock: _Clock | None = None,
    predictions: list[Prediction] | None = None,
) -> np.ndarray:
    """The query's L2-normalised vector: an uploaded sketch is embedded; a stored image reuses its vector."""
    if image_id is not None:
        row = loaded.matrix.rows(np.array([image_id], dtype=np.int64))
        if len(row):
            return loaded.matrix.vectors[row[0]]
        feature = Feature.objects.filter(image_id=image_id, extractor=loaded.index.extractor).first()
        if feature is not None:
            return np.frombuffer(bytes(feature.vector), dtype="<f4")
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
    pixels = preprocess_sketch(decoded, backbone.input_size)
    if clock:
        clock.lap("preprocess")
    classes = (loaded.index.extractor.details or {}).get("classes")
    if predictions is not None and classes and hasattr(backbone, "embed_and_classify"):
        vectors, probabilities = backbone.embed_and_classify(pixels[np.newaxis])
        if probabilities is not None and probabilities.shape[1] == len(classes):
            top = np.argsort(-probabilities[0])[:PREDICTIONS]
            predictions.extend(Prediction(label=str(classes[i]), score=float(probabilities[0, i])) for i in top)
        vector = vectors[0]
    else:
        vector = backbone.embed(pixels[np.newaxis])[0]
    if clock:
        clock.lap("embed")
    return vector


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
    """Search the index (or scan its whole matrix) with a sketch or a stored image; best hits first.

    ``probes`` left out is the index's own (tuned when it was built, ``LSHIndex.probes``).

    ``domain`` keeps only images of ``"sketch"`` collections or of ``"photo"`` collections (by the collection's kind;
    images of "mixed" collections match neither); ``"both"`` or ``None`` keeps everything.
    """
    if domain not in DOMAINS:
        raise SearchError(f"domain must be one of {', '.join(d for d in DOMAINS if d)}, got {domain!r}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise SearchError(f"k must be between 1 and {MAX_TOP_K}, got {top_k}")
    if probes is not None and probes < 0:
        raise SearchError(f"probes must be >= 0, got {probes}")
    clock = _Clock()
    resolved = _resolve_index(index)
    probes_default = probes is None
    if probes is None:
        probes = resolved.probes
    loaded = index_cache.get(resolved)
    matrix = loaded.matrix
    clock.lap("load")
    predictions: list[Prediction] = []
    vector = query_vector(loaded=loaded, image=image, image_id=image_id, clock=clock, predictions=predictions)
    n = matrix.image_ids.shape[0]
    if scan:
        rows = np.arange(n)
        with_repeats = n
    else:
        # A search that names no probes takes the index's tuned ones and, for a query whose buckets are nearly
        # empty, as many more as bring MIN_CANDIDATES (measured on Quick, Draw! drawings against the demo:
        # README "Relevance"); explicit probes are taken as given.
        floor = min(settings.SKETCHSEARCH_MIN_CANDIDATES, n) if probes_default else 0

        def timed_lookup(pairs: np.ndarray) -> np.ndarray:
            clock.lap("hash")  # the probe keys of this round were just computed
            found = loaded.store.lookup(pairs)
            clock.lap("sql")
            return found

        hits, probes = probe_until(
            loaded.family,  # type: ignore[arg-type]
            vector,
            timed_lookup,
            probes=probes,
            min_candidates=floor,
        )
        rows = matrix.rows(np.unique(hits))
        with_repeats = int(hits.shape[0])
    candidates = int(rows.shape[0])
    if label:
        rows = rows[matrix.labels[rows] == label]
    wanted_kind = DOMAINS[domain]
    if wanted_kind is not None:
        if matrix.kinds is None:
            raise SearchError("this index has no collection kinds loaded: cannot filter by domain")
        rows = rows[matrix.kinds[rows] == wanted_kind]
    if image_id is not None:
        rows = rows[matrix.image_ids[rows] != image_id]  # query by example: do not return the query itself
    if scan and not label and wanted_kind is None and image_id is None:
        top_rows_2d, scores_2d = cosine_top_k(matrix.vectors, vector[np.newaxis], min(top_k, n))
        top_rows, scores = top_rows_2d[0], scores_2d[0]
    else:
        top_rows, scores = rerank(matrix.vectors, rows, vector, top_k)
    clock.lap("rerank")
    hits_out = []
    for hit_id, score in zip(matrix.image_ids[top_rows].tolist(), scores.tolist(), strict=True):
        meta = loaded.meta.get(hit_id)
        if meta is not None:  # an image deleted after the index was built is not shown
            hits_out.append(
                SearchHit(
                    image_id=hit_id,
                    url=default_storage.url(meta.file),
                    label=meta.label,
                    score=score,
                    collection=meta.collection,
                    split=meta.split,
                )
            )
    clock.lap("fetch")
    return SearchResult(
        hits=hits_out,
        index=resolved,
        scan=scan,
        probes=probes,
        collection_size=n,
        candidates=candidates,
        candidates_with_repeats=with_repeats,
        timings_ms=clock.timings,
        predictions=predictions,
    )
