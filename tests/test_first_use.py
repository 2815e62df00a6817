"""What a newcomer meets first (issue 16): how to get an admin account, what fills /evaluation/, a favicon, branding."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from tests.factories import make_indexed_collection, use_tiny_backbone

pytestmark = pytest.mark.django_db

FAVICON = '<link rel="icon" href="/static/frontend/favicon.svg" type="image/svg+xml">'


def test_the_admin_login_says_how_to_get_an_account_and_is_branded() -> None:
    html = Client().get("/admin/login/").content.decode()
    assert "manage.py createsuperuser" in html
    assert "Sketchsearch administration" in html
    assert "Django administration" not in html
    assert FAVICON in html


def test_the_admin_pages_are_branded(admin_client: Client) -> None:
    html = admin_client.get("/admin/").content.decode()
    assert "Sketchsearch administration" in html
    assert "Collections, images, indexes, jobs and evaluation runs" in html
    assert FAVICON in html
    assert 'href="/">Drawing page</a>' in html


def test_an_empty_evaluation_page_says_which_commands_fill_it() -> None:
    html = Client().get("/evaluation/").content.decode()
    assert "No evaluation run yet" in html
    assert "manage.py evaluate --collection demo --extractor mobilenet_v1 --scan" in html
    assert "manage.py lsh_sweep" in html
    assert "manage.py class_analysis" in html


def test_the_empty_evaluation_page_names_the_served_index(monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_backbone(monkeypatch)
    make_indexed_collection()
    html = Client().get("/evaluation/").content.decode()
    assert "manage.py evaluate --collection tiny --extractor tiny --index default" in html


@pytest.mark.parametrize("page", ["/", "/evaluation/"])
def test_pages_name_a_favicon(page: str) -> None:
    assert FAVICON in Client().get(page).content.decode()


def test_favicon_ico_points_at_the_static_icon() -> None:
    response = Client().get("/favicon.ico")
    assert response.status_code == 302
    assert response["Location"] == "/static/frontend/favicon.svg"
    assert finders.find("frontend/favicon.svg")
