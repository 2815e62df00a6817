from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pytest
from django.core.files.storage import default_storage

from evaluation import metrics
from evaluation.data import evaluation_data_load, evaluation_inputs_resolve
from evaluation.grid import parse_grid
from evaluation.models import EvaluationRun
from evaluation.protocol_maths import EvaluationError
from evaluation.reports import PAPER_COLUMNS, SWEEP_COLUMNS
from evaluation.runs import RECALL_UNAVAILABLE, class_analysis, evaluation_run, lsh_sweep
from indexing.models import Image
from indexing.selectors import features_load
from indexing.services.index import index_build
from indexing.stores import OrmBucketStore
from tests.evaluation.conftest import CLASSES, PER_CLASS, PHOTOS, TEST_PER_CLASS, Dataset

pytestmark = pytest.mark.django_db


def brute_force(dataset: Dataset, *, distractors: bool = False, gallery_split: str | None = "train") -> dict[str, Any]:
    """Rankings by sorting cosines in Python, one query at a time, and AP by the definition."""
    collections = [dataset.sketches.pk] + ([dataset.photos.pk] if distractors else [])
    matrix = features_load(extractor=dataset.extractor, collection_ids=collections)
    split = dict(Image.objects.values_list("id", "split"))
    photo_ids = set(Image.objects.filter(collection=dataset.photos).values_list("id", flat=True))
    gallery = [
        row
        for row, image_id in enumerate(matrix.image_ids.tolist())
        if image_id in photo_ids or gallery_split is None or split[image_id] == gallery_split
    ]
    queries = [row for row, i in enumerate(matrix.image_ids.tolist()) if i not in photo_ids and split[i] == "test"]
    aps: dict[int, float] = {}
    shares: list[bool] = []
    for q in queries:
        candidates = [g for g in gallery if g != q]
        scores = {g: float(matrix.vectors[q] @ matrix.vectors[g]) for g in candidates}
        ranking = sorted(candidates, key=lambda g: (-scores[g], g))
        label = matrix.labels[q]
        relevant_total = sum(1 for g in candidates if matrix.labels[g] == label and label)
        hits, total = 0, 0.0
        for rank, g in enumerate(ranking, start=1):
            if matrix.labels[g] == label and int(matrix.image_ids[g]) not in photo_ids:
                hits += 1
                total += hits / rank
        aps[int(matrix.image_ids[q])] = total / relevant_total
        shares.extend(int(matrix.image_ids[g]) in photo_ids for g in ranking[:10])
    labels = dict(zip(matrix.image_ids.tolist(), matrix.labels, strict=True))
    return {"aps": aps, "share10": float(np.mean(shares)), "labels": labels}


def test_scan_map_equals_a_brute_force_computation(dataset: Dataset) -> None:
    run = evaluation_run(extractor=dataset.extractor, collections=[dataset.sketches])
    expected = brute_force(dataset)
    assert run.kind == EvaluationRun.Kind.EVALUATE
    assert run.results["mAP"] == pytest.approx(np.mean(list(expected["aps"].values())))
    assert run.results["queries"] == CLASSES * TEST_PER_CLASS
    assert run.results["gallery size"] == CLASSES * (PER_CLASS - TEST_PER_CLASS)
    assert run.results["recall@10"] == 1.0
    assert run.results["IE"] == 1.0
    assert run.results["p50 latency ms"] > 0
    assert "distractor share@10" not in run.results


def test_paper_queries_are_the_first_test_sketch_of_each_class(dataset: Dataset) -> None:
    data = evaluation_data_load(extractor=dataset.extractor, collections=[dataset.sketches], queries="paper")
    firsts = [
        Image.objects.filter(collection=dataset.sketches, split="test", label=f"class{c}").order_by("id").first()
        for c in range(CLASSES)
    ]
    assert data.query_ids.tolist() == [image.pk for image in firsts if image is not None]


def test_distractor_share_is_computed(dataset: Dataset) -> None:
    run = evaluation_run(extractor=dataset.extractor, collections=[dataset.sketches], distractors=[dataset.photos])
    expected = brute_force(dataset, distractors=True)
    assert run.results["distractors"] == PHOTOS
    assert run.results["distractor share@10"] == pytest.approx(expected["share10"])
    assert 0.0 <= run.results["distractor share@50"] <= 1.0
    # Photos are never relevant, so they only push sketches down.
    assert run.results["mAP"] == pytest.approx(np.mean(list(expected["aps"].values())))


def test_stored_index_matches_its_bucket_rows(dataset: Dataset) -> None:
    index = index_build(
        extractor=dataset.extractor,
        collections=[dataset.sketches],
        family="binary",
        num_tables=3,
        hashes_per_table=3,
        probes=0,
    )
    run = evaluation_run(extractor=dataset.extractor, collections=[dataset.sketches], index=index)
    # The same numbers from the stored BucketEntry rows, query by query through OrmBucketStore.
    data = evaluation_data_load(extractor=dataset.extractor, collections=[dataset.sketches])
    from indexing.selectors import index_family

    family = index_family(index)
    store = OrmBucketStore(list(index.tables.order_by("number").values_list("id", flat=True)))
    gallery = set(data.gallery_ids.tolist())
    distinct = repeats = 0
    aps = []
    labels = dict(zip(data.gallery_ids.tolist(), data.gallery_labels.tolist(), strict=True))
    for vector, label, total in zip(data.query_vectors, data.query_labels, data.num_relevant, strict=True):
        keys = family.keys(vector[np.newaxis])[0]  # type: ignore[attr-defined]
        hits = [i for i in store.lookup(np.column_stack([np.arange(len(keys)), keys])).tolist() if i in gallery]
        distinct += len(set(hits))
        repeats += len(hits)
        rows = data.gallery_vectors[np.searchsorted(data.gallery_ids, sorted(set(hits)))]
        ranked = [i for _, i in sorted(zip((-(rows @ vector)).tolist(), sorted(set(hits)), strict=True))]
        aps.append(metrics.ranking_ap(0, [0 if labels[i] == label else 1 for i in ranked] or [1], int(total)))
    size = data.gallery_ids.shape[0] * data.query_ids.shape[0]
    assert run.results["IE"] == pytest.approx(size / distinct)
    assert run.results["IE (paper)"] == pytest.approx(size / repeats)
    assert run.results["mAP"] == pytest.approx(np.mean(aps))
    assert run.results["scan"]["mAP"] >= run.results["mAP"]
    assert run.index == index
    assert run.results["number of items"] == data.gallery_ids.shape[0] * 3


def test_sweep_rows_have_every_paper_column(dataset: Dataset) -> None:
    grid = parse_grid("L=1,3 K=2,4")
    run = lsh_sweep(
        extractor=dataset.extractor,
        collections=[dataset.sketches],
        distractors=[dataset.photos],
        family=["real", "binary"],
        grid=grid,
        probes=[0, 1],
        w=1.0,
        center=True,
    )
    rows = run.results["rows"]
    assert len(rows) == 2 * len(grid) * 2
    n = CLASSES * (PER_CLASS - TEST_PER_CLASS) + PHOTOS
    for row in rows:
        assert set(SWEEP_COLUMNS) <= set(row)
        assert set(PAPER_COLUMNS) <= set(row)
        assert row["number of items"] == n * row["L"]
        assert 0.0 <= row["mAP"] <= run.results["scan"]["mAP"] + 1e-9
        assert row["IE"] is None or row["IE"] >= 1.0
        assert row["IE (paper)"] is None or row["IE (paper)"] <= (row["IE"] or np.inf)
        assert 0.0 < row["avg bucket purity"] <= 1.0
    assert run.figures == [f"evaluations/{run.pk}/sweep.png"]
    assert default_storage.open(run.figures[0]).read(8) == b"\x89PNG\r\n\x1a\n"
    table = list(csv.DictReader(io.StringIO(default_storage.open(run.results["files"]["csv"]).read().decode())))
    assert len(table) == len(rows)
    assert list(table[0]) == list(SWEEP_COLUMNS)
    assert "| family | L | K |" in default_storage.open(run.results["files"]["markdown"]).read().decode()


def test_sweep_probes_only_widen_the_candidates(dataset: Dataset) -> None:
    run = lsh_sweep(
        extractor=dataset.extractor, collections=[dataset.sketches], family="binary", grid=[(2, 6)], probes=[0, 2]
    )
    plain, probed = run.results["rows"]
    assert (plain["probes"], probed["probes"]) == (0, 2)
    assert probed["IE"] <= plain["IE"]
    assert probed["recall@10"] >= plain["recall@10"]


def test_class_analysis_matches_per_class_ap(dataset: Dataset) -> None:
    run = class_analysis(extractor=dataset.extractor, collections=[dataset.sketches])
    expected = brute_force(dataset, gallery_split=None)
    ids = sorted(expected["aps"])
    labels = [expected["labels"][i] for i in ids]
    names = sorted(set(labels))
    summaries = metrics.per_class_ap([expected["aps"][i] for i in ids], [names.index(x) for x in labels], ids)
    assert len(run.per_class) == CLASSES
    for row, summary in zip(run.per_class, summaries, strict=True):
        assert row["class"] == names[summary.label]
        assert row["mAP"] == pytest.approx(summary.mean_ap)
        assert row["min AP"] == pytest.approx(summary.min_ap)
        assert row["max AP"] == pytest.approx(summary.max_ap)
        assert row["max-min range"] == pytest.approx(summary.range_ap)
        assert row["std"] == pytest.approx(summary.std_ap)
        assert row["best query id"] == summary.best_query_id
        assert row["worst query id"] == summary.worst_query_id
    assert run.results["classifier recall"] == RECALL_UNAVAILABLE
    assert "pearson recall vs mAP" not in run.results
    assert len(run.figures) == 1


def test_class_analysis_correlates_with_stored_classifier_recall(dataset: Dataset) -> None:
    dataset.extractor.details = {"per_class_recall": {f"class{c}": 0.2 + 0.2 * c for c in range(CLASSES)}}
    dataset.extractor.save()
    run = class_analysis(extractor=dataset.extractor, collections=[dataset.sketches])
    maps = [row["mAP"] for row in run.per_class]
    recalls = [row["recall"] for row in run.per_class]
    assert run.results["pearson recall vs mAP"] == pytest.approx(metrics.pearson_correlation(recalls, maps))
    assert len(run.figures) == 2


def test_bad_inputs_name_the_value(dataset: Dataset) -> None:
    with pytest.raises(EvaluationError, match="nope"):
        evaluation_inputs_resolve(extractor="nope", collections=["sketches"])
    with pytest.raises(EvaluationError, match="missing"):
        evaluation_inputs_resolve(extractor="tiny", collections=["missing"])
    with pytest.raises(EvaluationError, match="both"):
        evaluation_inputs_resolve(extractor="tiny", collections=["sketches"], distractors=["sketches"])
    with pytest.raises(EvaluationError, match="family"):
        lsh_sweep(extractor=dataset.extractor, collections=[dataset.sketches], family="fuzzy", grid=[(1, 1)])
    with pytest.raises(EvaluationError, match="queries"):
        evaluation_run(extractor=dataset.extractor, collections=[dataset.sketches], queries="some")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("L=3,4 K=1,2", [(3, 1), (3, 2), (4, 1), (4, 2)]),
        ("3x6, 7x2,3x6", [(3, 6), (7, 2)]),
        ("K=5 L=3", [(3, 5)]),
    ],
)
def test_parse_grid(text: str, expected: list[tuple[int, int]]) -> None:
    assert parse_grid(text) == expected


@pytest.mark.parametrize("text", ["", "L=3", "3y6", "L=0 K=1", "0x2", "L=a K=1"])
def test_parse_grid_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="grid"):
        parse_grid(text)


def test_queries_from_another_collection_search_the_whole_gallery(dataset: Dataset) -> None:
    from indexing.services.extraction import collection_extract_features
    from tests.factories import make_collection, make_image

    others = make_collection("others")
    # Labels spelled as another data set spells them: "Class_0" is class0; "unknown" has no gallery class.
    for c, label in enumerate(["Class_0", "class-1", "unknown"]):
        make_image(others, seed=9000 + c, label=label)
    collection_extract_features(collection=others, extractor=dataset.extractor)
    run = evaluation_run(
        extractor=dataset.extractor, collections=[dataset.sketches], query_collections=[others], scan=True
    )
    matrix = features_load(extractor=dataset.extractor, collection_ids=[dataset.sketches.pk])
    queries = features_load(extractor=dataset.extractor, collection_ids=[others.pk])
    aps, hits = [], []
    for vector, label in zip(queries.vectors[:2], ["class0", "class1"], strict=True):
        order = sorted(range(len(matrix.labels)), key=lambda g: (-float(vector @ matrix.vectors[g]), g))
        relevant = [matrix.labels[g] == label for g in order]
        found = np.cumsum(relevant)
        aps.append(sum(found[i] / (i + 1) for i, r in enumerate(relevant) if r) / sum(relevant))
        hits.append(relevant[0])
    assert run.results["queries"] == 2  # "unknown" has no relevant gallery item
    assert run.results["gallery size"] == CLASSES * PER_CLASS  # every split of the gallery collection
    assert run.results["mAP"] == pytest.approx(np.mean(aps))
    assert run.results["hit@1"] == pytest.approx(np.mean(hits))
    assert run.parameters["query_collections"] == ["others"]
    with pytest.raises(EvaluationError, match="both queried and searched"):
        evaluation_run(
            extractor=dataset.extractor, collections=[dataset.sketches], query_collections=[dataset.sketches]
        )
