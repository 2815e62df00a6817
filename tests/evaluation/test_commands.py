from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evaluation.models import EvaluationRun
from evaluation.reports import format_value
from indexing.models import LSHIndex
from tests.evaluation.conftest import CLASSES, Dataset

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_evaluate_scan_prints_a_table(dataset: Dataset) -> None:
    output = run("evaluate", "--collection", "sketches", "--extractor", "tiny", "--scan", "--distractors", "photos")
    assert "| metric | value |" in output
    assert "| mAP |" in output
    assert "| distractor share@10 |" in output
    assert EvaluationRun.objects.get().results["distractors"] > 0


def test_lsh_sweep_prints_the_paper_columns(dataset: Dataset) -> None:
    output = run(
        "lsh_sweep", "--family", "binary", "--family", "real", "--grid", "2x3,3x2", "--probes", "0,1",
        "--collection", "sketches", "--extractor", "tiny", "--center", "--w", "1",
    )  # fmt: skip
    header = next(line for line in output.splitlines() if line.startswith("| family"))
    for column in ["mAP", "IE", "avg bucket purity", "std bucket purity", "number of buckets", "number of items"]:
        assert f" {column} |" in header
    assert output.count("| binary |") == 4
    assert "sequential scan: mAP" in output
    assert "sweep.png" in output


def test_build_index_prints_the_id_that_evaluate_takes_as_does_the_name(dataset: Dataset) -> None:
    built = run("build_index", "--extractor", "tiny", "--L", "2", "--K", "3", "--name", "my")
    index = LSHIndex.objects.get(name="my")
    assert built.startswith(f"built my v1 (id {index.pk}; binary L=2 K=3) over ")
    by_name = run("evaluate", "--collection", "sketches", "--extractor", "tiny", "--index", "my")
    by_id = run("evaluate", "--collection", "sketches", "--extractor", "tiny", "--index", str(index.pk))
    for output in (by_name, by_id):
        assert output.startswith(f"LSH index {index} (id {index.pk}) over sketches")
    assert [stored.index_id for stored in EvaluationRun.objects.all()] == [index.pk, index.pk]


def test_evaluate_an_index_prints_its_map_as_a_fraction_of_the_scan(dataset: Dataset) -> None:
    run("build_index", "--extractor", "tiny", "--collection", "sketches", "--L", "2", "--K", "3")
    output = run("evaluate", "--collection", "sketches", "--extractor", "tiny", "--index", "default")
    results = EvaluationRun.objects.get().results
    lines = output.splitlines()
    assert lines.index("| x scan | " + format_value(results["mAP"] / results["scan"]["mAP"]) + " |") == (
        lines.index(f"| mAP | {format_value(results['mAP'])} |") + 1
    )


def test_evaluate_an_unknown_index_name_lists_the_active_ones(dataset: Dataset) -> None:
    run("build_index", "--extractor", "tiny", "--collection", "sketches", "--L", "2", "--K", "3", "--name", "mine")
    index = LSHIndex.objects.get()
    with pytest.raises(CommandError, match=rf"no active index named 'other' \(active: mine v1 \(id {index.pk}\)"):
        run("evaluate", "--collection", "sketches", "--extractor", "tiny", "--index", "other")


def test_lsh_sweep_prints_an_x_scan_column(dataset: Dataset) -> None:
    output = run("lsh_sweep", "--family", "binary", "--grid", "2x3", "--collection", "sketches", "--extractor", "tiny")
    header, _, row = [line for line in output.splitlines() if line.startswith("|")][:3]
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    result = EvaluationRun.objects.get().results
    assert cells[" x scan "].strip() == format_value(result["rows"][0]["mAP"] / result["scan"]["mAP"])
    assert header.index(" mAP | x scan | IE ") > 0


def test_class_analysis_prints_classes_and_writes_json(dataset: Dataset, tmp_path: Path) -> None:
    target = tmp_path / "classes.json"
    output = run("class_analysis", "--collection", "sketches", "--extractor", "tiny", "--json", str(target))
    assert "| class | queries | mAP |" in output
    assert "classifier recall unavailable" in output
    rows = json.loads(target.read_text())
    assert len(rows) == CLASSES
    assert {"class", "label", "mAP", "min AP", "max AP", "max-min range", "std"} <= set(rows[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--collection", "sketches", "--extractor", "nope", "--scan"], "nope"),
        (["evaluate", "--collection", "nowhere", "--extractor", "tiny", "--scan"], "nowhere"),
        (["evaluate", "--collection", "sketches", "--extractor", "tiny", "--index", "999"], "999"),
        (["lsh_sweep", "--family", "binary", "--grid", "3y6", "--collection", "c", "--extractor", "tiny"], "3y6"),
        (["lsh_sweep", "--family", "binary", "--grid", "2x2", "--collection", "x1", "--extractor", "tiny"], "x1"),
        (["class_analysis", "--collection", "sketches", "--extractor", "ghost"], "ghost"),
        (["train_sketch_head", "--members", "0"], "--members must be 1 or more, got 0"),
        (["evaluate_relevance", "--members", "-2"], "--members must be 1 or more, got -2"),
    ],
)
def test_commands_name_the_bad_value(dataset: Dataset, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_evaluate_takes_queries_and_gallery_as_separate_collections(dataset: Dataset) -> None:
    from indexing.services.extraction import collection_extract_features
    from tests.factories import make_collection, make_image

    drawn = make_collection("drawn")
    for c in range(CLASSES):
        make_image(drawn, seed=7000 + c, label=f"Class {c}")
    collection_extract_features(collection=drawn, extractor=dataset.extractor)
    output = run("evaluate", "--queries", "drawn", "--gallery", "sketches", "--extractor", "tiny", "--scan")
    assert "queries from drawn: sequential scan over sketches" in output
    assert "| hit@1 |" in output
    stored = EvaluationRun.objects.get()
    assert stored.results["queries"] == CLASSES
    assert stored.parameters["query_collections"] == ["drawn"]
    with pytest.raises(CommandError, match="go together"):
        run("evaluate", "--queries", "drawn", "--extractor", "tiny", "--scan")
    with pytest.raises(CommandError, match="no query.s class is in the gallery"):
        run("evaluate", "--queries", "photos", "--gallery", "sketches", "--extractor", "tiny", "--scan")
