"""Incremental updates: images written after a build are searchable at once, deleted ones gone at once."""

from __future__ import annotations

import io
import json
import shutil
import threading

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from pytest_django.fixtures import Settings

from indexing.lsh.codes import shortlist
from indexing.lsh.vectorfile import FORMAT
from indexing.models import Bucket, BucketEntry, Feature, Image, IndexAddition, LSHIndex
from indexing.selectors import features_load
from indexing.services import search as search_services
from indexing.services.extraction import collection_extract_features, features_upsert
from indexing.services.index import index_activate, index_build
from indexing.services.search import query_vector, sketch_search
from indexing.services.updates import version_images_add
from indexing.serving import index_cache, vector_folder
from tests.conftest import sketch_png
from tests.factories import make_image, make_indexed_collection, use_tiny_backbone

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)


def _bucket_ids(index: LSHIndex) -> list[int]:
    packed = b"".join(bytes(b.ids) for b in Bucket.objects.filter(table__index=index))
    return np.frombuffer(packed, dtype=">i8").tolist()


def test_a_new_image_is_searchable_without_a_rebuild() -> None:
    collection, extractor, index = make_indexed_collection()
    sketch_search(image=sketch_png(1), top_k=5)  # the version is loaded in this process before the image exists
    image = make_image(collection, seed=9001, label="new")
    collection_extract_features(collection=collection, extractor=extractor)
    assert IndexAddition.objects.filter(index=index, image=image).count() == 1
    assert BucketEntry.objects.filter(table__index=index, image=image).count() == index.num_tables
    assert _bucket_ids(index).count(image.pk) == index.num_tables
    result = sketch_search(image=sketch_png(9001), top_k=5)
    assert result.hits[0].image_id == image.pk
    assert result.hits[0].label == "new"
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert result.collection_size == 25
    scan = sketch_search(image=sketch_png(9001), top_k=5, scan=True)
    assert scan.hits[0].image_id == image.pk
    assert [h.image_id for h in sketch_search(image_id=image.pk, top_k=3, scan=True).hits] == [
        h.image_id for h in scan.hits[1:4]
    ]


def test_a_re_embedded_image_is_searched_with_its_new_vector() -> None:
    _, extractor, index = make_indexed_collection()
    target = Image.objects.order_by("pk")[3]
    sketch_search(image=sketch_png(1), top_k=5)
    new_vector = features_load(extractor=extractor, collection_ids=[target.collection_id]).vectors[20]
    features_upsert(extractor=extractor, image_ids=np.array([target.pk]), vectors=new_vector[np.newaxis])
    twin = Image.objects.order_by("pk")[20]
    hits = sketch_search(image_id=twin.pk, top_k=2, scan=True).hits
    assert hits[0].image_id == target.pk
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sketch_search(image_id=twin.pk, top_k=2, probes=50).hits[0].image_id == target.pk


def test_a_deleted_image_disappears_at_once() -> None:
    _, _, index = make_indexed_collection()
    first = sketch_search(image=sketch_png(2), top_k=5)
    gone = first.hits[0].image_id
    Image.objects.filter(pk=gone).delete()
    after = sketch_search(image=sketch_png(2), top_k=5)
    assert gone not in [h.image_id for h in after.hits]
    assert [h.image_id for h in after.hits[:4]] == [h.image_id for h in first.hits[1:5]]
    assert gone not in [h.image_id for h in sketch_search(image=sketch_png(2), top_k=5, scan=True).hits]


def test_additions_written_elsewhere_are_read_within_the_poll(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection, extractor, index = make_indexed_collection()
    settings.SKETCHSEARCH_ADDITIONS_POLL_MS = 60_000
    sketch_search(image=sketch_png(1), top_k=5)  # loaded, and its additions read, just now
    own = make_image(collection, seed=9001, label="own")
    collection_extract_features(collection=collection, extractor=extractor)  # written by this process
    assert sketch_search(image=sketch_png(9001), top_k=1).hits[0].image_id == own.pk  # read at once
    # Another process's write: the same rows, without this process's mark.
    monkeypatch.setattr("indexing.services.updates.additions_written.mark", lambda: None)
    other = make_image(collection, seed=9002, label="other")
    collection_extract_features(collection=collection, extractor=extractor)
    assert IndexAddition.objects.filter(index=index, image=other).exists()
    assert sketch_search(image=sketch_png(9002), top_k=1).hits[0].image_id != other.pk  # not polled yet
    settings.SKETCHSEARCH_ADDITIONS_POLL_MS = 0  # the poll is due
    assert sketch_search(image=sketch_png(9002), top_k=1).hits[0].image_id == other.pk


@pytest.mark.parametrize("scan", [True, False])
def test_a_search_whose_best_hits_were_all_deleted_ranks_the_rest(scan: bool) -> None:
    make_indexed_collection()
    before = sketch_search(image=sketch_png(3), top_k=20, scan=scan, probes=50)
    gone = [h.image_id for h in before.hits[:9]]  # more than the 4 x 2 candidates put in order for top_k=2
    Image.objects.filter(pk__in=gone).delete()
    after = sketch_search(image=sketch_png(3), top_k=2, scan=scan, probes=50)
    assert [h.image_id for h in after.hits] == [h.image_id for h in before.hits[9:11]]


def test_an_image_added_during_a_build_ends_up_in_the_new_version_once() -> None:
    collection, extractor, old = make_indexed_collection()
    new = index_build(
        extractor=extractor,
        collections=[collection],
        family="binary",
        num_tables=3,
        hashes_per_table=3,
        probes=0,
        activate=False,
    )
    image = make_image(collection, seed=777, label="late")
    collection_extract_features(collection=collection, extractor=extractor)  # hashed into the old, active version
    assert BucketEntry.objects.filter(table__index=old, image=image).count() == old.num_tables
    assert not BucketEntry.objects.filter(table__index=new, image=image).exists()
    index_activate(index=new)
    assert BucketEntry.objects.filter(table__index=new, image=image).count() == 3
    assert _bucket_ids(new).count(image.pk) == 3
    index_activate(index=new)  # activating again replays nothing twice
    assert _bucket_ids(new).count(image.pk) == 3
    assert sketch_search(image=sketch_png(777), top_k=1).hits[0].image_id == image.pk


def test_adding_the_same_image_twice_doubles_nothing() -> None:
    _, extractor, index = make_indexed_collection()
    feature = Feature.objects.filter(extractor=extractor).order_by("image_id").first()
    assert feature is not None
    vector = np.frombuffer(bytes(feature.vector), dtype="<f4")[np.newaxis]
    before = sorted(_bucket_ids(index))
    version_images_add(index=index, image_ids=np.array([feature.image_id]), vectors=vector)
    version_images_add(index=index, image_ids=np.array([feature.image_id]), vectors=vector)
    assert sorted(_bucket_ids(index)) == before


def test_a_missing_vector_folder_is_written_again_from_the_features() -> None:
    _, _, index = make_indexed_collection()
    expected = [h.image_id for h in sketch_search(image=sketch_png(3), top_k=5).hits]
    index_cache.clear()
    shutil.rmtree(vector_folder(index))
    assert [h.image_id for h in sketch_search(image=sketch_png(3), top_k=5).hits] == expected
    assert (vector_folder(index) / "vectors.npy").exists()


def test_write_vectors_rewrites_an_old_format_folder_and_prunes_deleted_versions() -> None:
    _, _, index = make_indexed_collection()
    folder = vector_folder(index)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 2}))  # a folder written before an upgrade
    stale = folder.parent / "index-999999-0123456789"
    stale.mkdir()
    out = io.StringIO()
    call_command("write_vectors", stdout=out)
    assert f"(id {index.pk}): 24 vectors in {folder}" in out.getvalue()
    assert "deleted index-999999-0123456789" in out.getvalue()
    assert json.loads((folder / "meta.json").read_text())["format"] == FORMAT
    assert not stale.exists()


def test_the_hamming_cut_keeps_the_candidates_nearest_by_code(settings: Settings) -> None:
    _, _, index = make_indexed_collection(num_tables=2, hashes_per_table=1)  # every query finds most images
    settings.SKETCHSEARCH_RERANK_CANDIDATES = 6
    result = sketch_search(image=sketch_png(4), top_k=6, probes=0)
    loaded = index_cache.get(index)
    vector = query_vector(loaded=loaded, image=sketch_png(4), image_id=None)
    found = loaded.lsh.candidates(vector, 0)
    rows, _ = loaded.vectors.rows(found.ids)
    kept = rows[shortlist(loaded.vectors.codes[rows], loaded.vectors.coder.encode(vector[np.newaxis])[0], 6)]
    oracle = loaded.vectors.ids[kept][np.argsort(-(loaded.vectors.vectors[kept] @ vector), kind="stable")]
    assert result.candidates == found.ids.shape[0] > 6
    assert sorted(h.image_id for h in result.hits) == sorted(oracle.tolist())


def test_the_int8_first_pass_re_ranks_its_shortlist_exactly(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection, extractor, index = make_indexed_collection(num_tables=2, hashes_per_table=1)
    monkeypatch.setattr(search_services, "SHORTLIST_FLOOR", 1)
    settings.SKETCHSEARCH_SHORTLIST_PER_HIT = 2  # 3 hits: the 6 best by int8 scores are re-ranked exactly
    loaded = index_cache.get(index)
    vector = query_vector(loaded=loaded, image=sketch_png(4), image_id=None)
    found = loaded.lsh.candidates(vector, 0).ids
    rows, _ = loaded.vectors.rows(found)
    assert rows.shape[0] > 6
    stored = np.asarray(loaded.vectors.vectors)
    scale = 127 / np.abs(stored).max()  # the oracle: its own int8 copy and a stable sort
    assert loaded.vectors.compact_scale == pytest.approx(scale)
    rough = np.clip(np.rint(stored[rows] * scale), -127, 127) @ vector
    kept = rows[np.argsort(-rough, kind="stable")[:6]]
    exact = loaded.vectors.ids[kept][np.argsort(-(stored[kept] @ vector), kind="stable")]
    ranked, _ = search_services._ranked(
        loaded, search_services._pool_of(loaded, found), vector, scan=False, shortlist=6
    )
    assert sorted(ranked.tolist()) == sorted(exact.tolist())  # only the shortlist comes back
    result = sketch_search(image=sketch_png(4), top_k=3, probes=0)
    assert result.candidates == rows.shape[0]
    assert [h.image_id for h in result.hits] == exact[:3].tolist()
    settings.SKETCHSEARCH_SHORTLIST_PER_HIT = 0  # off: every candidate re-ranked exactly
    everything = loaded.vectors.ids[rows][np.argsort(-(stored[rows] @ vector), kind="stable")]
    assert [h.image_id for h in sketch_search(image=sketch_png(4), top_k=3, probes=0).hits] == everything[:3].tolist()
    settings.SKETCHSEARCH_SHORTLIST_PER_HIT = 2
    image = make_image(collection, seed=9004, label="new")  # an addition is scored exactly, never shortlisted away
    collection_extract_features(collection=collection, extractor=extractor)
    assert sketch_search(image=sketch_png(9004), top_k=3, probes=0).hits[0].image_id == image.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_inserts_searches_and_a_rebuild_lose_and_double_nothing() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite serialises writers, so it cannot show a race")
    collection, extractor, _ = make_indexed_collection()
    errors: list[BaseException] = []
    added: list[int] = []

    def insert(worker: int) -> None:
        try:
            for i in range(6):
                image = make_image(collection, seed=5000 + worker * 100 + i, label=f"w{worker}")
                vector = features_load(extractor=extractor, collection_ids=[collection.pk]).vectors[i]
                features_upsert(extractor=extractor, image_ids=np.array([image.pk]), vectors=vector[np.newaxis])
                added.append(image.pk)
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    def search() -> None:
        try:
            for seed in range(10):
                sketch_search(image=sketch_png(seed), top_k=5)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    def rebuild() -> None:
        try:
            index_build(
                extractor=extractor,
                collections=[collection],
                family="binary",
                num_tables=4,
                hashes_per_table=4,
                probes=0,
                center=True,
            )
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=insert, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=search), threading.Thread(target=rebuild)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    active = LSHIndex.objects.get(name="default", is_active=True)
    assert active.version == 2
    everything = list(Image.objects.values_list("pk", flat=True))
    assert len(everything) == 24 + 18
    ids = _bucket_ids(active)
    assert sorted(set(ids)) == sorted(everything)  # nothing lost
    assert all(ids.count(pk) == active.num_tables for pk in everything)  # nothing doubled
    for pk in added:
        assert BucketEntry.objects.filter(table__index=active, image_id=pk).count() == active.num_tables


def test_the_index_list_says_when_a_version_has_outgrown_its_parameters(settings: Settings) -> None:
    from rest_framework.test import APIClient

    collection, extractor, _ = make_indexed_collection()
    make_image(collection, seed=9100, label="new")
    collection_extract_features(collection=collection, extractor=extractor)
    row = APIClient().get("/api/indexes/").json()[0]
    assert (row["item_count"], row["images_now"], row["needs_rebuild"]) == (24, 25, False)
    settings.SKETCHSEARCH_REBUILD_GROWTH = 1.04
    assert APIClient().get("/api/indexes/").json()[0]["needs_rebuild"] is True


def test_loading_a_version_drops_the_folders_of_deleted_versions() -> None:
    collection, extractor, first = make_indexed_collection()
    second = index_build(
        extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=2, probes=0
    )
    old_folder = vector_folder(first)
    assert old_folder.exists()
    LSHIndex.objects.filter(pk=first.pk).update(is_active=False)
    retired = LSHIndex.objects.get(pk=first.pk)
    kept = old_folder.parent / "unrelated"  # not a version folder: left alone
    kept.mkdir()
    shutil.copytree(old_folder, old_folder.parent / "index-keep")  # a stray copy, as another machine may leave
    LSHIndex.objects.filter(pk=retired.pk).delete()  # deleted elsewhere: this machine's folder stays behind
    assert old_folder.exists()
    index_cache.clear()
    assert sketch_search(image=sketch_png(5), top_k=3, index=second.pk).hits
    assert not old_folder.exists()
    assert not (old_folder.parent / "index-keep").exists()
    assert kept.exists()
    assert vector_folder(second).exists()


def test_deleting_a_version_removes_its_folder_on_this_machine() -> None:
    from indexing.services.index import index_delete

    collection, extractor, first = make_indexed_collection()
    index_build(
        extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=2, probes=0
    )
    folder = vector_folder(first)
    assert folder.exists()
    index_delete(index=LSHIndex.objects.get(pk=first.pk))
    assert not folder.exists()
