"""A fuzz pass with schemathesis against our own OpenAPI schema: whatever the input, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from tests.search.fakes import BuiltIndex, build_index, install_tiny_backbone

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def indexed(monkeypatch: pytest.MonkeyPatch, db: None) -> Iterator[BuiltIndex]:
    install_tiny_backbone(monkeypatch)
    # Called as a plain WSGI app, Django would close the test's database connection after each request
    # (request_finished -> close_old_connections); Django's own test client disconnects these the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield build_index(per_class=3)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.include(method="POST", path="/api/search/").parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_search_never_answers_500(case: schemathesis.Case, indexed: BuiltIndex) -> None:
    response = case.call()
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        assert "error" in response.json()


@schema.include(method="GET").parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_read_endpoints_never_answer_500(case: schemathesis.Case, indexed: BuiltIndex) -> None:
    response = case.call()
    assert response.status_code < 500, response.text
