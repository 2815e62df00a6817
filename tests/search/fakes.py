"""A built index over three labels, for the API and browser tests (backbone: tests.factories.TinyBackbone)."""

from __future__ import annotations

from dataclasses import dataclass

from indexing.models import Collection, Extractor, LSHIndex
from indexing.services.extraction import collection_extract_features
from indexing.services.index import index_build
from indexing.serving import index_cache
from tests.factories import make_collection, make_image, use_tiny_backbone

install_tiny_backbone = use_tiny_backbone  # the API and browser tests' name for it

LABELS = ("cat", "house", "tree")


@dataclass(frozen=True)
class BuiltIndex:
    collection: Collection
    extractor: Extractor
    index: LSHIndex
    image_ids: list[int]


def build_index(*, per_class: int = 6) -> BuiltIndex:
    collection = make_collection(name="sketches")
    image_ids = [
        make_image(collection, seed=100 * c + i, label=label, split="test" if i == 0 else "train").pk
        for c, label in enumerate(LABELS)
        for i in range(per_class)
    ]
    extractor = Extractor.objects.create(name="tiny", backbone="tiny", weights="none", input_size=32, output_dim=64)
    collection_extract_features(collection=collection, extractor=extractor)
    index = index_build(
        extractor=extractor, collections=[collection], family="binary", num_tables=4, hashes_per_table=4, center=True
    )
    return BuiltIndex(collection=collection, extractor=extractor, index=index, image_ids=image_ids)


def clear_caches() -> None:
    index_cache.clear()
