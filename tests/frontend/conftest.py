from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.search.fakes import BuiltIndex, build_index, clear_caches, install_tiny_backbone


@pytest.fixture
def live_index(monkeypatch: pytest.MonkeyPatch, transactional_db: None) -> Iterator[BuiltIndex]:
    # transactional_db: the live server's thread reads the rows, so they must be committed.
    install_tiny_backbone(monkeypatch)
    clear_caches()
    yield build_index(per_class=8)
    clear_caches()
