"""One image at a time: add an uploaded image to a collection and make it searchable at once.

``POST /api/images/`` (staff) and the admin's image form go through :func:`image_create`: the file is checked and
stored (deduplicated by sha256 within its collection, as the importer does), then embedded by every extractor whose
active index covers the collection; writing its Feature rows hashes it into those indexes
(indexing.services.updates), so the next search anywhere can return it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.db import transaction

from indexing.models import Collection, Extractor, Image
from indexing.services.extraction import collection_extract_features
from indexing.services.importer import check_image


class InvalidImageError(ValueError):
    """The upload is not an image this collection can take (the message says why)."""


@dataclass
class ImageCreated:
    image: Image
    created: bool  # False: the collection already held these bytes
    embedded_by: list[str] = field(default_factory=list)  # extractor names


def image_create(
    *, collection: Collection, data: bytes, name: str, label: str = "", split: str = "train"
) -> ImageCreated:
    """Store ``data`` as an image of ``collection`` and embed it for the collection's active indexes.

    Raises:
        InvalidImageError: when the bytes are not a readable image or the split is unknown.
    """
    if split not in Image.Split.values:
        raise InvalidImageError(f"split must be one of {', '.join(Image.Split.values)}, got {split!r}")
    checked = check_image(data)
    if isinstance(checked, str):
        raise InvalidImageError(f"{name or 'the upload'}: {checked}")
    digest = hashlib.sha256(data).hexdigest()
    existing = Image.objects.filter(collection=collection, sha256=digest).first()
    if existing is not None:
        return ImageCreated(existing, created=False)
    with transaction.atomic():
        image = Image(
            collection=collection,
            sha256=digest,
            label=label,
            split=split,
            source="upload",
            original_name=name,
            width=checked[0],
            height=checked[1],
        )
        image.file.save(name or f"{digest[:16]}.png", ContentFile(data), save=False)
        image.save()
    return ImageCreated(image, created=True, embedded_by=image_embed(image=image))


def image_embed(*, image: Image) -> list[str]:
    """Embed one image with every extractor an active index over its collection uses; return their names.

    Its Feature writes hash it into those indexes (``features_upsert`` -> ``index_images_add``).

    Raises:
        InvalidImageError: when a backbone cannot decode it.
    """
    extractors = Extractor.objects.filter(indexes__is_active=True, indexes__collections=image.collection_id).distinct()
    names = []
    for extractor in extractors.order_by("pk"):
        report = collection_extract_features(collection=image.collection, extractor=extractor, image_ids=[image.pk])
        if report.failed:
            raise InvalidImageError(f"{image.original_name or image.file.name}: {report.failed[0][1]}")
        names.append(extractor.name)
    return names
