"""benchmarks/backbone_finetune.py, the GPU-bound fine-tuning script, run small on CPU (both strategies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "tu-berlin-40").is_dir() or not (DATA / "quickdraw-344").is_dir(),
        reason=f"needs {DATA}/tu-berlin-40 and quickdraw-344 (../shared/data)",
    ),
]
SMALL = ["--words", "2", "--tu-per-class", "4", "--photo-views", "2", "--head-epochs", "2", "--folds", "0"]


def run(tmp_path: Path, *args: str) -> tuple[str, dict]:  # type: ignore[type-arg]
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "backbone_finetune.py"), *SMALL, "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1], json.loads(out.read_text())


@pytest.mark.parametrize("strategy", ["two-blocks", "all"])
def test_a_small_run_trains_and_reports_both_rows(tmp_path: Path, strategy: str) -> None:
    line, result = run(tmp_path, "--strategy", strategy, "--epochs", "1", "--batch-size", "8")
    assert line.startswith(f"backbone fine-tuning ({strategy}, folds 0): p@10 ")
    (fold,) = result["folds"]
    assert fold["fold"] == 0
    # 2 classes: 8 TU-Berlin sketches and 24 drawings of the other folds (x4 with the cuts), 22 photo crops.
    assert fold["train_rows"] == 8 + 24 * 4 + 22
    for stage in ("frozen", "fine_tuned"):
        for view in ("whole", "50%"):
            p10, hit1 = fold[stage][view]
            assert 0.0 <= p10 <= 1.0
            assert 0.0 <= hit1 <= 1.0
    assert fold["fine_tune_s"] > 0
    assert result["setup"]["lr"] == (1e-4 if strategy == "two-blocks" else 1e-5)


def test_without_phase_two_the_fine_tuned_row_is_the_frozen_one(tmp_path: Path) -> None:
    _, result = run(tmp_path, "--epochs", "0")
    (fold,) = result["folds"]
    assert fold["fine_tuned"] == fold["frozen"]
