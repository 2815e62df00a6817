"""Thinned strokes end to end: a ``sketch_thin`` extractor embeds indexed sketches and drawn queries alike.

The oracle is the backbone run by hand on ``prepare_image(..., thin=True)``: the stored vector, the query vector and
the head's base row must all come from that preprocessing, and a plain row from the other.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from indexing.features.pipeline import prepare_image
from indexing.features.vectors import vector_from_bytes
from indexing.models import Extractor, Feature
from tests.factories import TinyBackbone, make_collection, make_image, make_sketch_head_file, use_tiny_backbone

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)


def _thick_png(width: int) -> bytes:
    image = PILImage.new("L", (128, 128), 255)
    draw = ImageDraw.Draw(image)
    draw.line([(10, 20), (110, 100)], fill=0, width=width)
    draw.ellipse((30, 30, 90, 90), outline=0, width=width)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_thin_row_is_its_own_extractor_and_names_its_preprocessing() -> None:
    from indexing.services.backbones import extractor_thins_strokes
    from indexing.services.extraction import extractor_get_or_create

    plain = extractor_get_or_create(backbone="tiny")
    thin = extractor_get_or_create(backbone="tiny", thin=True)

    assert (plain.name, thin.name) == ("tiny", "tiny-thin")
    assert (extractor_thins_strokes(plain), extractor_thins_strokes(thin)) == (False, True)
    assert extractor_get_or_create(backbone="tiny", thin=True).pk == thin.pk  # found again, not doubled
    with pytest.raises(ValueError, match="sketch_thin True"):
        extractor_get_or_create(name="tiny-thin", backbone="tiny", thin=False)


def test_the_base_of_a_thinning_head_is_the_thin_row() -> None:
    from indexing.services.training import base_extractor_resolve

    thin = base_extractor_resolve("tiny", thin=True)
    plain = base_extractor_resolve("tiny")

    assert thin.pk != plain.pk
    assert base_extractor_resolve("tiny", thin=True).pk == thin.pk
    assert (thin.details or {}).get("sketch_thin") is True
    assert "sketch_thin" not in (plain.details or {})


def test_extraction_stores_vectors_of_the_thinned_strokes() -> None:
    from indexing.services.extraction import collection_extract_features, extractor_get_or_create

    collection = make_collection()
    image = make_image(collection, seed=3)
    thin = extractor_get_or_create(backbone="tiny", thin=True)
    plain = extractor_get_or_create(backbone="tiny")
    for extractor in (thin, plain):
        assert collection_extract_features(collection=collection, extractor=extractor).embedded == 1

    def stored(extractor: Extractor) -> np.ndarray:
        return vector_from_bytes(Feature.objects.get(extractor=extractor, image=image).vector)

    path = image.file.path
    thinned = TinyBackbone().embed(prepare_image(path, 32, thin=True)[np.newaxis])[0]
    as_drawn = TinyBackbone().embed(prepare_image(path, 32)[np.newaxis])[0]
    np.testing.assert_allclose(stored(thin), thinned, atol=1e-6)
    np.testing.assert_allclose(stored(plain), as_drawn, atol=1e-6)
    assert not np.allclose(thinned, as_drawn, atol=1e-3)  # the preprocessing made a difference


def test_a_drawn_query_is_thinned_as_the_index_was(tmp_path: Path) -> None:
    from indexing.services.extraction import collection_extract_features, extractor_get_or_create
    from indexing.services.index import index_build
    from indexing.services.search import query_vector, sketch_search
    from indexing.serving import index_cache

    collection = make_collection()
    for seed in range(6):
        make_image(collection, seed=seed, label=f"c{seed % 2}")
    extractor = extractor_get_or_create(backbone="tiny", thin=True)
    collection_extract_features(collection=collection, extractor=extractor)
    index = index_build(
        extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=4
    )
    loaded = index_cache.get(index)

    png = _thick_png(6)
    vector = query_vector(loaded=loaded, image=png, image_id=None)

    (tmp_path / "q.png").write_bytes(png)
    thinned = TinyBackbone().embed(prepare_image(tmp_path / "q.png", 32, thin=True)[np.newaxis])[0]
    as_drawn = TinyBackbone().embed(prepare_image(tmp_path / "q.png", 32)[np.newaxis])[0]
    np.testing.assert_allclose(vector, thinned, atol=1e-6)
    assert not np.allclose(vector, as_drawn, atol=1e-3)
    assert sketch_search(image=png, index=index.pk, top_k=3).hits  # and the whole served path runs


@pytest.mark.parametrize("thin", [True, False])
def test_a_head_file_trained_on_thinned_strokes_maps_the_thin_base(thin: bool) -> None:
    from indexing.services.backbones import extractor_thins_strokes
    from indexing.services.extraction import collection_extract_features
    from indexing.services.served_heads import sketch_extractor_get_or_create

    path = make_sketch_head_file(classes=2, meta={"sketch_thin": thin})

    extractor = sketch_extractor_get_or_create(path=path, name="drawn")
    base = Extractor.objects.get(name=extractor.details["base_extractor"])

    assert (base.name, extractor_thins_strokes(base), extractor_thins_strokes(extractor)) == (
        "tiny-thin" if thin else "tiny",
        thin,
        thin,
    )
    collection = make_collection()
    image = make_image(collection, seed=1)
    collection_extract_features(collection=collection, extractor=extractor)
    # The head's vector maps the base row's stored vector, which is of the preprocessing the head was trained on.
    base_vector = vector_from_bytes(Feature.objects.get(extractor=base, image=image).vector)
    expected = TinyBackbone().embed(prepare_image(image.file.path, 32, thin=thin)[np.newaxis])[0]
    np.testing.assert_allclose(base_vector, expected, atol=1e-6)


def test_a_replaced_head_retires_the_indexes_built_on_its_old_vectors() -> None:
    from indexing.models import LSHIndex
    from indexing.selectors import index_get_default
    from indexing.services.extraction import collection_extract_features
    from indexing.services.index import index_build
    from indexing.services.served_heads import sketch_extractor_get_or_create

    collection = make_collection()
    images = [make_image(collection, seed=seed, label=f"c{seed % 2}") for seed in range(6)]
    path = make_sketch_head_file(classes=2)
    extractor = sketch_extractor_get_or_create(path=path, name="drawn")
    collection_extract_features(collection=collection, extractor=extractor)
    old = index_build(extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=4)

    make_sketch_head_file(classes=3)  # retrained with one more class: 3-d vectors where the index holds 2-d ones
    extractor = sketch_extractor_get_or_create(path=path, name="drawn")
    old.refresh_from_db()
    assert (old.is_active, old.status) == (False, LSHIndex.Status.RETIRED)
    assert index_get_default() is None  # no search reads the old vectors
    # Re-embedding no longer hashes 3-d vectors into the 2-d version (it raised before), and a rebuild serves them.
    assert collection_extract_features(collection=collection, extractor=extractor).embedded == len(images)
    new = index_build(extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=4)
    assert index_get_default() == new


def test_the_shipped_heads_row_of_an_earlier_release_is_renamed_and_refilled() -> None:
    from indexing.services.extraction import collection_extract_features
    from indexing.services.served_heads import (
        LEGACY_SKETCH_EXTRACTORS,
        SKETCH_EXTRACTOR,
        sketch_extractor_get_or_create,
    )

    collection = make_collection()
    make_image(collection, seed=1)
    path = make_sketch_head_file(classes=2)
    legacy = sketch_extractor_get_or_create(path=path, name=LEGACY_SKETCH_EXTRACTORS[0])
    Extractor.objects.filter(pk=legacy.pk).update(weights="shipped")  # as the shipped file made it
    collection_extract_features(collection=collection, extractor=legacy)
    assert Feature.objects.filter(extractor=legacy).count() == 1

    make_sketch_head_file(classes=3)  # the new release's head
    row = sketch_extractor_get_or_create(path=path, name=SKETCH_EXTRACTOR)
    assert (row.pk, row.name, row.output_dim) == (legacy.pk, SKETCH_EXTRACTOR, 3)
    assert not Extractor.objects.filter(name__in=LEGACY_SKETCH_EXTRACTORS).exists()
    assert not Feature.objects.filter(extractor=row).exists()  # the old release's vectors are gone
    assert sketch_extractor_get_or_create(path=path, name=SKETCH_EXTRACTOR).pk == row.pk  # and it is stable
