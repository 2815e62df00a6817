from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_draw_page_renders_the_canvas_and_sets_the_csrf_cookie(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    for testid in ("sketch-canvas", "undo", "redo", "clear", "search", "results", "stats", "k-select", "index-select"):
        assert f'data-testid="{testid}"' in html
    assert "frontend/draw.js" in html
    assert "frontend/draw.css" in html
    assert 'aria-live="polite"' in html
    assert "csrftoken" in response.cookies
