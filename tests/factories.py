"""Helpers that build rows through the services or the ORM, for tests (A2 hc/test.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile

from indexing.models import Collection, Extractor, Image, LSHIndex
from tests.conftest import sketch_png


def make_collection(name: str = "c", kind: str = "sketches") -> Collection:
    return Collection.objects.create(name=name, kind=kind)


def make_image(collection: Collection, *, seed: int, label: str = "cat", split: str = "train") -> Image:
    data = sketch_png(seed)
    image = Image(collection=collection, sha256=hashlib.sha256(data).hexdigest(), label=label, split=split)
    image.file.save(f"{seed}.png", ContentFile(data), save=False)
    image.save()
    return image


def make_extractor(name: str = "fake", dim: int = 8) -> Extractor:
    return Extractor.objects.create(name=name, backbone="tiny", weights="none", input_size=32, output_dim=dim)


class TinyBackbone:
    """A deterministic stand-in for a CNN: 8x8 block means of the inverted grey image (real, if crude, features)."""

    name = "tiny"
    input_size = 32
    dim = 64
    param_count = 0
    weights = "none"

    def embed(self, images: np.ndarray) -> np.ndarray:
        grey = 255.0 - images.astype(np.float32).mean(axis=3)  # strokes high, background 0
        blocks = grey.reshape(len(images), 8, 4, 8, 4).mean(axis=(2, 4)).reshape(len(images), 64)
        norms = np.linalg.norm(blocks, axis=1, keepdims=True)
        return (blocks / np.where(norms == 0, 1, norms)).astype(np.float32)


def make_sketch_head_file(*, classes: int, meta: dict[str, object] | None = None) -> Path:
    """A tiny sketch head over the tiny backbone, written to MEDIA_ROOT/heads/h.npz (again on each call)."""
    from django.conf import settings as django_settings

    from indexing.features.sketch_head import HeadRecipe, TrainingSet, fit_sketch_head, save_head

    vectors = np.random.default_rng(classes).standard_normal((30, TinyBackbone.dim)).astype(np.float32)
    names = [f"c{c}" for c in range(classes)]
    data = TrainingSet(vectors, np.arange(30) % classes, np.array(names), np.ones(30, np.float32))
    head = fit_sketch_head(data, HeadRecipe(hidden=(8,), epochs=1, members=1))
    path = Path(django_settings.MEDIA_ROOT) / "heads" / "h.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_head(head, path, classes=names, meta={"backbone": "tiny", "classes": classes, **(meta or {})})
    return path


def tiny_backbone_factory(weights: str, **_: object) -> TinyBackbone:
    """The registry factory of the ``tiny`` backbone (see :func:`use_tiny_backbone`)."""
    return TinyBackbone()


def use_tiny_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the TinyBackbone as backbone ``tiny``, the one make_extractor's rows name, with the public registry.

    Process-wide, so live-server threads see it too. It stays registered (registering it again is a no-op): no
    shipped backbone has that name, and a test that replaces it (``register_backbone(..., replace=True)``) gets
    the TinyBackbone back from the next call.
    """
    from indexing import serving
    from indexing.features.backbones import register_backbone

    register_backbone(
        TinyBackbone.name,
        tiny_backbone_factory,
        input_size=TinyBackbone.input_size,
        dim=TinyBackbone.dim,
        default_weights=TinyBackbone.weights,
        description="8x8 block means of the inverted grey image (tests)",
        replace=True,
    )
    serving.index_cache.clear()


def make_indexed_collection(
    *,
    classes: int = 4,
    per_class: int = 6,
    family: str = "binary",
    num_tables: int = 4,
    hashes_per_table: int = 4,
    probes: int = 0,
) -> tuple[Collection, Extractor, LSHIndex]:
    """A small collection with features by the TinyBackbone and an active index (needs use_tiny_backbone)."""
    from indexing.services.extraction import collection_extract_features
    from indexing.services.index import index_build

    collection = make_collection("tiny")
    for c in range(classes):
        for i in range(per_class):
            make_image(collection, seed=c * 100 + i, label=f"class{c}", split="test" if i == per_class - 1 else "train")
    extractor = make_extractor("tiny", dim=TinyBackbone.dim)
    collection_extract_features(collection=collection, extractor=extractor)
    index = index_build(
        extractor=extractor,
        collections=[collection],
        family=family,
        num_tables=num_tables,
        hashes_per_table=hashes_per_table,
        probes=probes,
        center=True,
    )
    return collection, extractor, index
