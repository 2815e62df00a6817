from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from evaluation.models import EvaluationRun
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
    ],
)
def test_commands_name_the_bad_value(dataset: Dataset, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)
