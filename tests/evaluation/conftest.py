from __future__ import annotations

from dataclasses import dataclass

import pytest

from indexing.models import Collection, Extractor
from tests.factories import TinyBackbone, make_collection, make_extractor, make_image, use_tiny_backbone

CLASSES = 4
PER_CLASS = 8
TEST_PER_CLASS = 2
PHOTOS = 6


@dataclass(frozen=True)
class Dataset:
    sketches: Collection
    photos: Collection
    extractor: Extractor


@pytest.fixture
def dataset(monkeypatch: pytest.MonkeyPatch, db: None) -> Dataset:
    """4 classes x 8 sketches (the last 2 of each class are test) and 6 unlabelled photos, embedded by TinyBackbone."""
    from indexing.services.extraction import collection_extract_features

    use_tiny_backbone(monkeypatch)
    sketches = make_collection("sketches")
    for c in range(CLASSES):
        for i in range(PER_CLASS):
            split = "test" if i >= PER_CLASS - TEST_PER_CLASS else "train"
            make_image(sketches, seed=c * 100 + i, label=f"class{c}", split=split)
    photos = make_collection("photos", kind="photos")
    for i in range(PHOTOS):
        make_image(photos, seed=5000 + i, label="")
    extractor = make_extractor("tiny", dim=TinyBackbone.dim)
    collection_extract_features(collection=sketches, extractor=extractor)
    collection_extract_features(collection=photos, extractor=extractor)
    return Dataset(sketches=sketches, photos=photos, extractor=extractor)
