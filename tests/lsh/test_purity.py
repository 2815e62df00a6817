from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_lsh_core_imports_neither_django_nor_tensorflow() -> None:
    script = (
        "import sys\n"
        "import indexing.lsh, indexing.lsh.hashing, indexing.lsh.index, indexing.lsh.scan\n"
        "import indexing.lsh.stats, indexing.lsh.store, indexing.lsh.codes, indexing.lsh.vectorfile\n"
        "print(sorted({'django', 'tensorflow', 'keras', 'celery', 'rest_framework'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"


def test_evaluation_protocol_maths_imports_neither_django_nor_tensorflow() -> None:
    script = (
        "import sys\n"
        "import evaluation.protocol_maths, evaluation.metrics, evaluation.protocols\n"
        "print(sorted({'django', 'tensorflow', 'keras', 'celery', 'rest_framework'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[]"
