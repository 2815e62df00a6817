from __future__ import annotations

from pathlib import Path

import pytest

from tests.features.helpers import TU_BERLIN


@pytest.fixture
def tu_berlin() -> Path:
    if not TU_BERLIN.is_dir():
        pytest.skip(f"TU-Berlin sketches not found at {TU_BERLIN} (set SKETCHSEARCH_DATA_DIR)")
    return TU_BERLIN


@pytest.fixture(autouse=True)
def _media_root() -> None:
    """Override tests/conftest.py's autouse MEDIA_ROOT fixture: the feature tests never touch Django.

    That fixture needs pytest-django's ``settings``; overriding it here keeps ``-p no:django`` working.
    """
