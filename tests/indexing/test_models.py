from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from django.db import IntegrityError, connection, transaction

from indexing.features.backbones import BACKBONES, register_backbone, unregister_backbone
from indexing.features.vectors import vector_from_bytes, vector_to_bytes
from indexing.lsh.hashing import FAMILIES
from indexing.models import BucketEntry, Extractor, Feature, HashTable, Image, LSHIndex
from tests.factories import TinyBackbone, make_collection, make_extractor, make_image

pytestmark = pytest.mark.django_db


def test_same_file_twice_in_a_collection_violates_the_sha_constraint() -> None:
    collection = make_collection()
    image = make_image(collection, seed=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Image.objects.create(collection=collection, sha256=image.sha256, file=image.file.name)
    # ... but another collection may hold the same bytes.
    Image.objects.create(collection=make_collection("other"), sha256=image.sha256, file=image.file.name)


def test_one_feature_per_image_and_extractor() -> None:
    image = make_image(make_collection(), seed=1)
    extractor = make_extractor()
    vector = vector_to_bytes(np.ones(8))
    Feature.objects.create(image=image, extractor=extractor, vector=vector)
    with pytest.raises(IntegrityError), transaction.atomic():
        Feature.objects.create(image=image, extractor=extractor, vector=vector)
    stored = Feature.objects.get()
    assert vector_from_bytes(stored.vector).tolist() == [1.0] * 8
    assert stored.vector == np.ones(8, dtype="<f4").tobytes()  # little-endian float32, the documented format


def _index(version: int, *, active: bool = False) -> LSHIndex:
    return LSHIndex.objects.create(
        name="default", version=version, extractor=make_extractor(f"e{version}"), family="binary",
        num_tables=1, hashes_per_table=4, is_active=active,
    )  # fmt: skip


def test_a_bucket_holds_an_image_once() -> None:
    # The primary key is (table, key, image): the one B-tree the bulk writes maintain. That an image sits in
    # exactly one bucket per table is the builder's guarantee (one key per vector and table), not a constraint.
    image = make_image(make_collection(), seed=1)
    table = HashTable.objects.create(index=_index(1), number=0, params=b"")
    BucketEntry.objects.create(table=table, key=-(2**63), image=image)  # the full signed 64-bit range fits
    with pytest.raises(IntegrityError), transaction.atomic():
        BucketEntry.objects.create(table=table, key=-(2**63), image=image)
    assert BucketEntry.objects.get().key == -(2**63)


def test_only_one_active_version_per_index_name() -> None:
    _index(1, active=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        _index(2, active=True)
    _index(3, active=False)


def test_bucket_rows_carry_only_the_primary_key() -> None:
    # One B-tree, (table, key, image), serves the lookups by its (table, key) prefix, on PostgreSQL and SQLite.
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, BucketEntry._meta.db_table)
        primary_key = connection.introspection.get_primary_key_columns(cursor, BucketEntry._meta.db_table)
    indexed = [c["columns"] for c in constraints.values() if c["index"] or c["unique"]]
    # PostgreSQL lists the primary key's index (in key order); SQLite reports the primary key only below.
    assert indexed in ([["table_id", "key", "image_id"]], [] if connection.vendor == "sqlite" else None)
    assert sorted(primary_key or []) == ["image_id", "key", "table_id"]  # SQLite lists the columns in table order
    # Nothing else is maintained on bulk writes: no foreign-key triggers, no single-column indexes.
    assert not [c for c in constraints.values() if c["foreign_key"]]
    assert not [c for c in constraints.values() if c["index"] and len(c["columns"]) == 1]


class _ToyBackbone(TinyBackbone):
    """A backbone registered by a test only: the TinyBackbone's features, reversed (so they are its own)."""

    name = "toy"

    def embed(self, images: np.ndarray) -> np.ndarray:
        return super().embed(images)[:, ::-1].copy()


@pytest.fixture
def toy_backbone() -> Iterator[str]:
    register_backbone(
        "toy", lambda weights, **_: _ToyBackbone(), input_size=32, dim=64, default_weights="none", description="toy"
    )
    yield "toy"
    unregister_backbone("toy")


def test_a_registered_backbone_runs_end_to_end_from_its_extractor_row(toy_backbone: str) -> None:
    from indexing.services.backbones import extractor_backbone
    from indexing.services.extraction import collection_extract_features, extractor_get_or_create

    assert (toy_backbone, "toy") in Extractor._meta.get_field("backbone").choices  # type: ignore[operator]
    extractor = extractor_get_or_create(backbone=toy_backbone)
    assert (extractor.name, extractor.weights, extractor.input_size, extractor.output_dim) == ("toy", "none", 32, 64)
    extractor.full_clean()  # its backbone is a valid choice
    collection = make_collection()
    images = [make_image(collection, seed=seed) for seed in range(3)]

    report = collection_extract_features(collection=collection, extractor=extractor)

    assert report.embedded == 3
    assert isinstance(extractor_backbone(extractor), _ToyBackbone)
    from indexing.features.pipeline import prepare_image

    stored = vector_from_bytes(Feature.objects.get(extractor=extractor, image=images[0]).vector)
    expected = _ToyBackbone().embed(prepare_image(images[0].file.path, 32)[np.newaxis])[0]
    np.testing.assert_allclose(stored, expected, atol=1e-6)


def test_choices_are_read_from_the_registries() -> None:
    assert list(LSHIndex._meta.get_field("family").choices or []) == [(n, f.label) for n, f in FAMILIES.items()]
    assert [name for name, _ in Extractor._meta.get_field("backbone").choices] == list(BACKBONES)  # type: ignore[union-attr]
