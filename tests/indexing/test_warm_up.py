"""`make run` warms the active index and its model up in the background when runserver starts."""

from __future__ import annotations

import threading

import pytest
from django.apps import apps
from pytest_django.fixtures import Settings

from indexing.services import backbones
from indexing.serving import index_cache
from tests.factories import make_indexed_collection, use_tiny_backbone


def _warm_up_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "sketchsearch-warm-up"]


@pytest.mark.django_db(transaction=True)  # the warm-up thread reads through its own connection
def test_the_index_and_its_model_are_loaded_in_the_background_at_start(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_tiny_backbone(monkeypatch)
    _, extractor, index = make_indexed_collection()
    index_cache.clear()
    monkeypatch.setattr(backbones, "_loaded", set())
    settings.SKETCHSEARCH_WARM_UP_ON_START = False
    apps.get_app_config("indexing").ready()
    assert not _warm_up_threads()
    settings.SKETCHSEARCH_WARM_UP_ON_START = True
    apps.get_app_config("indexing").ready()
    threads = _warm_up_threads()
    assert len(threads) == 1
    threads[0].join(timeout=60)
    assert not threads[0].is_alive()
    assert backbones.extractor_is_loaded(extractor)  # what /healthz reports as "model": "ready"
    assert index.pk in index_cache._loaded
