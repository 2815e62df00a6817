from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _media_root() -> None:
    # The pure LSH tests write no media and must run without Django (``-p no:django``): this
    # replaces tests/conftest.py's autouse fixture of the same name, which needs pytest-django.
    return None
