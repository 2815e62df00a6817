"""The look tie-break of an index over the served sketch head, against an oracle written from the stored vectors.

The oracle ranks the gallery by the head's vectors (class probabilities), takes the best k and orders them by
``(1 - w) * class cosine + w * base cosine``, the base vectors being the TinyBackbone run by hand on the images (not
the Feature rows the search reads): the same hits as without the look, in another order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from pytest_django.fixtures import Settings

from indexing.features.heads import HeadBackbone
from indexing.features.pipeline import prepare_image
from indexing.features.vectors import vector_from_bytes
from indexing.models import Extractor, Feature, Image
from tests.conftest import sketch_png
from tests.factories import TinyBackbone, make_collection, make_image, make_sketch_head_file, use_tiny_backbone

pytestmark = pytest.mark.django_db

TOP_K = 4


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Extractor:
    from indexing.services.extraction import collection_extract_features
    from indexing.services.index import index_build
    from indexing.services.served_heads import sketch_extractor_get_or_create

    use_tiny_backbone(monkeypatch)
    collection = make_collection()
    for seed in range(24):
        make_image(collection, seed=seed, label=f"c{seed % 2}")
    extractor = sketch_extractor_get_or_create(path=make_sketch_head_file(classes=2), name="drawn")
    collection_extract_features(collection=collection, extractor=extractor)
    index_build(extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=2)
    return extractor


def _tiny(path: Path) -> np.ndarray:
    return TinyBackbone().embed(prepare_image(path, TinyBackbone.input_size)[np.newaxis])[0]


def _oracle(extractor: Extractor, query_class: np.ndarray, query_look: np.ndarray, *, exclude: int | None) -> list:
    weight = django_settings.SKETCHSEARCH_LOOK_WEIGHT
    rows = {f.image_id: vector_from_bytes(f.vector) for f in Feature.objects.filter(extractor=extractor)}
    if exclude is not None:
        rows.pop(exclude)
    by_class = sorted(rows, key=lambda i: (-float(rows[i] @ query_class), i))[:TOP_K]
    looks = {i: float(_tiny(Path(Image.objects.get(pk=i).file.path)) @ query_look) for i in by_class}
    blend = {i: (1 - weight) * float(rows[i] @ query_class) + weight * looks[i] for i in by_class}
    return sorted(blend, key=lambda i: (-blend[i], i))


@pytest.mark.parametrize("scan", [True, False])
def test_a_drawn_query_orders_its_hits_as_the_oracle(
    served: Extractor, scan: bool, tmp_path: Path, settings: Settings
) -> None:
    from indexing.services.backbones import extractor_backbone
    from indexing.services.search import sketch_search

    png = sketch_png(7)
    (tmp_path / "q.png").write_bytes(png)
    look = _tiny(tmp_path / "q.png")
    head = extractor_backbone(served)
    assert isinstance(head, HeadBackbone)
    query = head.embed_features(look[np.newaxis])[0]
    probes = None if scan else 8

    served_order = [hit.image_id for hit in sketch_search(image=png, top_k=TOP_K, scan=scan, probes=probes).hits]
    assert served_order == _oracle(served, query, look, exclude=None)
    settings.SKETCHSEARCH_LOOK_WEIGHT = 0.2  # larger than served, so the test's random head surely reorders
    result = sketch_search(image=png, top_k=TOP_K, scan=scan, probes=probes)

    assert [hit.image_id for hit in result.hits] == _oracle(served, query, look, exclude=None)
    assert [hit.image_id for hit in result.hits] != served_order
    assert "look" in result.timings_ms


def test_a_stored_query_takes_its_base_row_and_the_look_changes_the_order(
    served: Extractor, settings: Settings
) -> None:
    from indexing.services.search import sketch_search

    image = Image.objects.order_by("pk")[3]
    query = vector_from_bytes(Feature.objects.get(extractor=served, image=image).vector)
    look = _tiny(Path(image.file.path))

    settings.SKETCHSEARCH_LOOK_WEIGHT = 0.2  # larger than served, so the test's random head surely reorders
    looked = [hit.image_id for hit in sketch_search(image_id=image.pk, top_k=TOP_K, scan=True).hits]
    settings.SKETCHSEARCH_LOOK_WEIGHT = 0.0
    plain = sketch_search(image_id=image.pk, top_k=TOP_K, scan=True)

    settings.SKETCHSEARCH_LOOK_WEIGHT = 0.2
    assert looked == _oracle(served, query, look, exclude=image.pk)
    assert looked != [hit.image_id for hit in plain.hits]
    assert sorted(looked) == sorted(hit.image_id for hit in plain.hits)  # the same hits, in another order
    # Switched off, the scores are the head vectors' plain cosines and no look stage runs.
    expected = {
        f.image_id: float(vector_from_bytes(f.vector) @ query) for f in Feature.objects.filter(extractor=served)
    }
    assert [hit.score for hit in plain.hits] == pytest.approx([expected[hit.image_id] for hit in plain.hits], abs=1e-5)
    assert "look" not in plain.timings_ms


def test_a_hit_without_a_base_vector_keeps_its_class_score(served: Extractor, settings: Settings) -> None:
    from indexing.services.search import sketch_search

    settings.SKETCHSEARCH_LOOK_WEIGHT = 0.2
    image = Image.objects.order_by("pk")[0]
    first = sketch_search(image_id=image.pk, top_k=TOP_K, scan=True).hits
    orphan = first[-1].image_id
    Feature.objects.filter(image_id=orphan, extractor__name=served.details["base_extractor"]).delete()
    query = vector_from_bytes(Feature.objects.get(extractor=served, image=image).vector)
    own = {f.image_id: float(vector_from_bytes(f.vector) @ query) for f in Feature.objects.filter(extractor=served)}

    hits = sketch_search(image_id=image.pk, top_k=5 * TOP_K, scan=True).hits

    assert next(hit.score for hit in hits if hit.image_id == orphan) == pytest.approx(own[orphan], abs=1e-5)
    others = [hit for hit in hits if hit.image_id != orphan]
    assert all(abs(hit.score - own[hit.image_id]) > 1e-4 for hit in others)  # blended with their looks
