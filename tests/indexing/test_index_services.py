from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from indexing.lsh.hashing import make_family
from indexing.lsh.index import LshIndex
from indexing.lsh.stats import bucket_stats
from indexing.models import Bucket, BucketEntry, Feature, HashTable, LSHIndex
from indexing.selectors import features_load, index_family
from indexing.services.extraction import collection_extract_features
from indexing.services.index import index_build, index_stats
from indexing.services.search import SearchError, query_vector, sketch_search
from indexing.serving import index_cache
from tests.conftest import sketch_png
from tests.factories import make_image, make_indexed_collection, use_tiny_backbone

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)


def test_build_writes_one_bucket_row_per_image_and_table() -> None:
    collection, extractor, index = make_indexed_collection(num_tables=3)
    assert index.is_active
    assert index.status == LSHIndex.Status.READY
    assert HashTable.objects.filter(index=index).count() == 3
    assert BucketEntry.objects.filter(table__index=index).count() == 24 * 3
    assert index.item_count == 24
    assert Feature.objects.filter(extractor=extractor).count() == 24


def test_each_bucket_row_packs_the_entries_of_its_key() -> None:
    _, _, index = make_indexed_collection(num_tables=3, hashes_per_table=2)
    for table in HashTable.objects.filter(index=index):
        entries: dict[int, list[int]] = {}
        for key, image_id in (
            BucketEntry.objects.filter(table=table).order_by("image_id").values_list("key", "image_id")
        ):
            entries.setdefault(key, []).append(image_id)
        packed = {
            bucket.key: np.frombuffer(bytes(bucket.ids), dtype=">i8").tolist()
            for bucket in Bucket.objects.filter(table=table)
        }
        assert packed == entries
        assert sorted(Bucket.objects.filter(table=table).values_list("size", flat=True)) == sorted(
            len(ids) for ids in entries.values()
        )


def test_stored_parameters_rebuild_the_same_keys() -> None:
    _, extractor, index = make_indexed_collection()
    matrix = features_load(extractor=extractor, collection_ids=list(index.collections.values_list("id", flat=True)))
    keys = index_family(index).keys(matrix.vectors)  # type: ignore[attr-defined]
    for table in HashTable.objects.filter(index=index):
        stored = dict(BucketEntry.objects.filter(table=table).values_list("image_id", "key"))
        assert [stored[int(i)] for i in matrix.image_ids] == keys[:, table.number].tolist()


@pytest.mark.parametrize(("family", "probes"), [("binary", 0), ("binary", 2), ("real", 0), ("real", 3)])
def test_database_search_equals_in_memory_search(family: str, probes: int) -> None:
    collection, extractor, index = make_indexed_collection(family=family, hashes_per_table=3)
    matrix = features_load(extractor=extractor, collection_ids=[collection.pk])
    center = np.frombuffer(bytes(index.center), dtype="<f4") if index.center is not None else None
    hasher = make_family(family, matrix.vectors.shape[1], num_tables=4, hashes_per_table=3, seed=0, center=center)
    memory = LshIndex(hasher).fit(matrix.vectors, matrix.image_ids)
    for seed in (7, 8, 9):
        result = sketch_search(image=sketch_png(seed), top_k=5, probes=probes)
        query = query_vector(loaded=index_cache.get(index), image=sketch_png(seed), image_id=None)
        expected = memory.query(query, top_k=5, probes=probes)
        assert [h.image_id for h in result.hits] == expected.ids.tolist()
        assert result.candidates == expected.candidates
        assert result.candidates_with_repeats == expected.candidates_with_repeats


def test_scan_returns_the_brute_force_ranking() -> None:
    collection, extractor, _ = make_indexed_collection()
    matrix = features_load(extractor=extractor, collection_ids=[collection.pk])
    result = sketch_search(image_id=int(matrix.image_ids[0]), top_k=5, scan=True)
    scores = matrix.vectors[1:] @ matrix.vectors[0]
    expected = matrix.image_ids[1:][np.argsort(-scores, kind="stable")[:5]]
    assert [h.image_id for h in result.hits] == expected.tolist()
    assert result.candidates == result.collection_size == 24
    assert result.ie == 1.0


def test_query_by_example_excludes_the_query_and_label_filter_applies() -> None:
    collection, _, _ = make_indexed_collection(num_tables=8, hashes_per_table=1)
    first = collection.images.order_by("pk").first()
    assert first is not None
    result = sketch_search(image_id=first.pk, top_k=10, label="class1")
    assert first.pk not in [h.image_id for h in result.hits]
    assert result.hits
    assert {h.label for h in result.hits} == {"class1"}


def test_activation_keeps_the_previous_version_and_deletes_older_ones(settings: Any) -> None:
    settings.SKETCHSEARCH_RETIRED_INDEX_GRACE_SECONDS = 0
    collection, extractor, first = make_indexed_collection()
    second = index_build(extractor=extractor, collections=[collection], family="binary", num_tables=2,
                         hashes_per_table=2)  # fmt: skip
    first.refresh_from_db()
    assert second.is_active
    assert second.version == 2
    assert (first.is_active, first.status) == (False, LSHIndex.Status.RETIRED)
    third = index_build(extractor=extractor, collections=[collection], family="real", num_tables=2, hashes_per_table=2)
    assert third.is_active
    assert not LSHIndex.objects.filter(pk=first.pk).exists()
    assert not BucketEntry.objects.filter(table__index_id=first.pk).exists()
    assert not Bucket.objects.filter(table__index_id=first.pk).exists()
    assert LSHIndex.objects.get(pk=second.pk).status == LSHIndex.Status.RETIRED
    # Searches without an explicit index use the new active version.
    assert sketch_search(image=sketch_png(3), top_k=3).index.pk == third.pk


def test_a_recently_retired_version_outlives_quick_flips_until_its_grace_ends(settings: Any) -> None:
    settings.SKETCHSEARCH_RETIRED_INDEX_GRACE_SECONDS = 60
    collection, extractor, first = make_indexed_collection()

    def build() -> LSHIndex:
        return index_build(extractor=extractor, collections=[collection], family="binary", num_tables=2,
                           hashes_per_table=2)  # fmt: skip

    build()
    build()  # two flips within the grace: a search that resolved `first` still finds its rows
    assert LSHIndex.objects.get(pk=first.pk).status == LSHIndex.Status.RETIRED
    assert BucketEntry.objects.filter(table__index_id=first.pk).exists()
    assert Bucket.objects.filter(table__index_id=first.pk).exists()
    LSHIndex.objects.filter(pk=first.pk).update(retired_at=timezone.now() - timedelta(seconds=61))
    fourth = build()
    assert not LSHIndex.objects.filter(pk=first.pk).exists()
    assert not BucketEntry.objects.filter(table__index_id=first.pk).exists()
    assert LSHIndex.objects.filter(name="default").count() == 3  # fourth, and the two retired within the grace
    assert fourth.is_active


def test_bucket_stats_from_sql_equal_the_in_memory_ones() -> None:
    collection, extractor, index = make_indexed_collection(hashes_per_table=2)
    matrix = features_load(extractor=extractor, collection_ids=[collection.pk])
    keys = index_family(index).keys(matrix.vectors)  # type: ignore[attr-defined]
    assert index_stats(index=index) == bucket_stats(keys, matrix.labels)


def test_extraction_is_idempotent_and_reports_unreadable_files() -> None:
    collection, extractor, _ = make_indexed_collection()
    again = collection_extract_features(collection=collection, extractor=extractor)
    assert (again.embedded, again.already) == (0, 24)
    forced = collection_extract_features(collection=collection, extractor=extractor, force=True)
    assert forced.embedded == 24
    assert Feature.objects.filter(extractor=extractor).count() == 24
    broken = make_image(collection, seed=999)
    Path(broken.file.path).write_bytes(b"not a png any more")
    report = collection_extract_features(collection=collection, extractor=extractor)
    assert report.embedded == 0
    assert [image_id for image_id, _ in report.failed] == [broken.pk]


def test_search_errors_are_clear() -> None:
    with pytest.raises(SearchError, match="no active index"):
        sketch_search(image=sketch_png(1))
    make_indexed_collection()
    with pytest.raises(SearchError, match="k must be"):
        sketch_search(image=sketch_png(1), top_k=0)
    with pytest.raises(SearchError, match="unknown index"):
        sketch_search(image=sketch_png(1), index=999_999)
    with pytest.raises(ValueError, match="image"):
        sketch_search(image=b"definitely not an image")


def test_a_build_without_parameters_tunes_them_and_searches_default_to_its_probes() -> None:
    from indexing.lsh.autotune import autotune

    collection, extractor, fixed = make_indexed_collection()
    assert fixed.tuning is None
    tuned = index_build(extractor=extractor, collections=[collection], family="binary", center=True, name="tuned")
    matrix = features_load(extractor=extractor, collection_ids=[collection.pk])
    expected = autotune(matrix.vectors, center=True).chosen
    assert (tuned.num_tables, tuned.hashes_per_table, tuned.probes) == (
        expected.num_tables,
        expected.hashes_per_table,
        expected.probes,
    )
    assert tuned.tuning is not None
    assert tuned.tuning["chosen"]["recall"] == pytest.approx(expected.recall)
    vector = matrix.vectors[0]
    default = sketch_search(image_id=int(matrix.image_ids[0]), index=tuned, top_k=5)
    # The default starts at the tuned probes and doubles them while fewer than SKETCHSEARCH_MIN_CANDIDATES images
    # (all 24 here) turned up; explicit probes are taken as given.
    assert default.probes >= tuned.probes
    assert default.candidates == 24 or default.probes == tuned.probes  # the query itself counts as scored
    explicit = sketch_search(image_id=int(matrix.image_ids[0]), index=tuned, top_k=5, probes=default.probes)
    assert explicit.probes == default.probes
    assert [h.image_id for h in default.hits] == [h.image_id for h in explicit.hits]
    assert vector.shape == (extractor.output_dim,)


def test_given_l_and_k_tune_only_the_probes_and_reindex_keeps_the_choice_mode() -> None:
    from indexing.services.index import index_reindex

    collection, extractor, fixed = make_indexed_collection(num_tables=2, hashes_per_table=6)
    assert fixed.probes == 0
    rebuilt = index_reindex()
    assert rebuilt is not None
    assert (rebuilt.num_tables, rebuilt.hashes_per_table, rebuilt.probes, rebuilt.tuning) == (2, 6, 0, None)
    only_probes = index_build(
        extractor=extractor, collections=[collection], family="binary", num_tables=2, hashes_per_table=6, center=True
    )
    assert (only_probes.num_tables, only_probes.hashes_per_table) == (2, 6)
    assert only_probes.tuning is not None
    assert [(t["num_tables"], t["hashes_per_table"]) for t in only_probes.tuning["trials"]] == [(2, 6)]
    assert only_probes.tuning["tuned"] == ["probes"]
    retuned = index_reindex()
    assert retuned is not None
    assert retuned.tuning is not None
    assert (retuned.num_tables, retuned.hashes_per_table, retuned.tuning["tuned"]) == (2, 6, ["probes"])
    everything = index_build(extractor=extractor, collections=[collection], family="binary", center=True)
    assert everything.tuning is not None
    assert everything.tuning["tuned"] == ["num_tables", "hashes_per_table", "probes"]
    again = index_reindex()
    assert again is not None
    assert again.tuning is not None
    assert len(again.tuning["trials"]) > 1  # the whole grid again
