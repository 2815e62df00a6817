from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.search.fakes import BuiltIndex, build_index, clear_caches, install_tiny_backbone


@pytest.fixture
def tiny_backbone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_tiny_backbone(monkeypatch)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def built(tiny_backbone: None, db: None) -> BuiltIndex:
    return build_index()
