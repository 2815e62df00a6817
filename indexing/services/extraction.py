"""Feature extraction: images -> Feature rows, in chunks, upserted (a re-run never doubles a vector)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from django.db import transaction

from indexing.features.backbones import Backbone, backbone_spec
from indexing.features.crossdomain import JointBackbone
from indexing.features.pipeline import ImageKind, embed_images
from indexing.features.preprocess import DEFAULT_SKETCH_DILATE
from indexing.features.vectors import vector_to_bytes
from indexing.models import Collection, Extractor, Feature, Image
from indexing.selectors import features_read
from indexing.services.backbones import backbone_load, extractor_backbone, extractor_thins_strokes
from indexing.services.updates import index_images_add

CHUNK_SIZE = 64


def extractor_get_or_create(
    *, name: str | None = None, backbone: str, weights: str | None = None, thin: bool = False
) -> Extractor:
    """The Extractor row for a backbone, weights origin and sketch preprocessing (created on first use).

    ``thin``: sketches are thinned to one-pixel strokes before the backbone (``preprocess_sketch(thin=True)``),
    recorded as ``details["sketch_thin"]``; such a row is named ``<backbone>-thin`` by default.
    """
    spec = backbone_spec(backbone)
    weights = weights or spec.default_weights
    name = name or extractor_default_name(backbone, weights=weights, thin=thin)
    existing = Extractor.objects.filter(name=name).first()
    if existing is not None:
        if existing.backbone != backbone or existing.weights != weights or extractor_thins_strokes(existing) != thin:
            raise ValueError(
                f"extractor {name!r} exists with backbone {existing.backbone}, weights {existing.weights} and "
                f"sketch_thin {extractor_thins_strokes(existing)}, not {backbone} / {weights} / {thin}"
            )
        return existing
    model = backbone_load(backbone=backbone, weights=weights)
    # Features depend on the sketch preprocessing: changing it means re-extracting (extract_features --force).
    details: dict[str, object] = {"sketch_dilate": DEFAULT_SKETCH_DILATE}
    if thin:
        details["sketch_thin"] = True
    return Extractor.objects.create(
        name=name,
        backbone=backbone,
        weights=weights,
        input_size=model.input_size,
        output_dim=model.dim,
        param_count=model.param_count,
        details=details,
    )


def extractor_default_name(backbone: str, *, weights: str | None = None, thin: bool = False) -> str:
    """A base row's name: the backbone's, ``-<weights>`` for other weights than its default, ``-thin`` if thinning."""
    name = backbone
    if weights is not None and weights != backbone_spec(backbone).default_weights:
        name = f"{backbone}-{_slug(weights)}"
    return f"{name}-thin" if thin else name


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.rsplit("/", 1)[-1].lower())[:40]


@dataclass
class ExtractionReport:
    extractor: str
    collection: str
    embedded: int = 0
    already: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.embedded / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.collection}: {self.embedded} images embedded with {self.extractor} "
            f"({rate:.1f} images/s), {self.already} already had a vector"
        )
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text


def features_upsert(*, extractor: Extractor, image_ids: np.ndarray, vectors: np.ndarray) -> int:
    """Insert or replace the vectors of ``image_ids``: the unique (image, extractor) pair makes it idempotent."""
    if len(image_ids) == 0:
        return 0
    rows = [
        Feature(image_id=int(image_id), extractor=extractor, vector=vector_to_bytes(vector))
        for image_id, vector in zip(image_ids, vectors, strict=True)
    ]
    with transaction.atomic():
        Feature.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["image", "extractor"], update_fields=["vector"]
        )
        index_images_add(extractor=extractor, image_ids=np.asarray(image_ids), vectors=np.asarray(vectors))
    return len(rows)


HEAD_CHUNK_SIZE = 4096


def _reusable_base(extractor: Extractor, backbone: Backbone, kind: ImageKind) -> Extractor | None:
    """The base Extractor whose stored vectors ``extractor``'s head can map directly, or None.

    That is a head trained head-only (the base's weights unchanged) whose base row exists, and, for a joint head's
    photo side, photos that go into the base as they are (not as edge maps, whose base vectors nobody stores).
    """
    if not extractor.head or not hasattr(backbone, "embed_features"):
        return None
    details = extractor.details or {}
    if details.get("strategy", "head-only") != "head-only" or not details.get("base_extractor"):
        return None
    if kind == "photo" and isinstance(backbone, JointBackbone) and backbone.photo_input != "photo":
        return None
    base = Extractor.objects.filter(name=details["base_extractor"], head="").first()
    if base is None or base.backbone != extractor.backbone:
        return None
    return base


def collection_extract_features(
    *,
    collection: Collection,
    extractor: Extractor,
    force: bool = False,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], object] | None = None,
    on_total: Callable[[int], object] | None = None,
    image_ids: Sequence[int] | None = None,
) -> ExtractionReport:
    """Embed the images of ``collection`` that have no ``extractor`` vector yet (all of them with ``force``).

    ``image_ids`` limits it to those images (one chunk of a fanned-out extraction, or one upload).
    """
    started = time.perf_counter()
    images = Image.objects.filter(collection=collection)
    if image_ids is not None:
        images = images.filter(pk__in=list(image_ids))
    report = ExtractionReport(extractor=extractor.name, collection=collection.name)
    if not force:
        done = Feature.objects.filter(extractor=extractor, image__collection=collection)
        report.already = done.count()
        images = images.exclude(pk__in=done.values("image_id"))
    todo = list(images.order_by("pk").values_list("pk", "file"))
    if on_total:
        on_total(len(todo))
    if not todo:
        return report
    backbone = extractor_backbone(extractor)
    kind: ImageKind = "photo" if collection.kind == Collection.Kind.PHOTOS else "sketch"
    base = _reusable_base(extractor, backbone, kind)
    if base is not None:
        # A head over an unchanged base: run the CNN only for images without a base vector (stored too), then map
        # the stored base vectors through the head, which takes seconds where the CNN takes minutes.
        collection_extract_features(collection=collection, extractor=base, chunk_size=chunk_size, image_ids=image_ids)
        side = "photo" if kind == "photo" else "sketch"
        ids = np.array([pk for pk, _ in todo], dtype=np.int64)
        for start in range(0, len(ids), HEAD_CHUNK_SIZE):
            chunk = ids[start : start + HEAD_CHUNK_SIZE]
            found, vectors = features_read(extractor=base, image_ids=chunk)
            if isinstance(backbone, JointBackbone):
                mapped = backbone.embed_features(vectors, side)
            else:
                mapped = backbone.embed_features(vectors)  # type: ignore[attr-defined]  # a HeadBackbone
            report.embedded += features_upsert(extractor=extractor, image_ids=found, vectors=mapped)
            missing = np.setdiff1d(chunk, found)
            report.failed.extend((int(pk), "the image could not be embedded by the base backbone") for pk in missing)
            if progress:
                progress(len(chunk))
        report.seconds = time.perf_counter() - started
        return report
    if kind == "photo" and isinstance(backbone, JointBackbone):
        # A joint sketch/photo head: photos go through its photo branch, prepared as during its training.
        kind = cast(ImageKind, backbone.photo_input)  # one of PHOTO_INPUTS: "photo", "edges" or "hed"
        backbone = backbone.for_kind(kind)
    from django.core.files.storage import default_storage

    sources = ((pk, default_storage.path(name)) for pk, name in todo)
    thin = extractor_thins_strokes(extractor)
    for ids, vectors, errors in embed_images(sources, backbone, kind=kind, batch_size=chunk_size, thin=thin):
        report.embedded += features_upsert(extractor=extractor, image_ids=ids, vectors=vectors)
        report.failed.extend(errors)
        if progress:
            progress(len(ids) + len(errors))
    report.seconds = time.perf_counter() - started
    return report
