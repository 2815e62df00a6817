"""Helpers that build rows through the services or the ORM, for tests (A2 hc/test.py)."""

from __future__ import annotations

from django.core.files.base import ContentFile

from indexing.models import Collection, Extractor, Image
from tests.conftest import sketch_png


def make_collection(name: str = "c", kind: str = "sketches") -> Collection:
    return Collection.objects.create(name=name, kind=kind)


def make_image(collection: Collection, *, seed: int, label: str = "cat", split: str = "train") -> Image:
    data = sketch_png(seed)
    import hashlib

    image = Image(collection=collection, sha256=hashlib.sha256(data).hexdigest(), label=label, split=split)
    image.file.save(f"{seed}.png", ContentFile(data), save=False)
    image.save()
    return image


def make_extractor(name: str = "fake", dim: int = 8) -> Extractor:
    return Extractor.objects.create(name=name, backbone="fake", weights="none", input_size=64, output_dim=dim)
