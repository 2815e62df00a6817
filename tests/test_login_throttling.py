"""Login throttling (django-axes): wrong admin logins and wrong Basic-auth credentials are counted and locked out."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

EVALUATIONS = "/api/evaluations/"
BODY = {"kind": "evaluate", "extractor": "tiny", "collections": ["sketches"]}


@pytest.fixture(autouse=True)
def _fast_hasher(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # a dozen logins per test


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("admin", password="right-password", is_staff=True, is_superuser=True)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def admin_login(client: Client, password: str) -> int:
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": password})
    return response.status_code


def test_wrong_admin_logins_lock_the_client_out_even_with_the_right_password(staff: User, settings: Settings) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert admin_login(client, "wrong") == 200  # the form again, with its error
    assert admin_login(client, "wrong") == 429  # the limit-th failure locks out
    locked = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "right-password"})
    assert locked.status_code == 429
    assert b"Locked out after too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session


def test_a_successful_admin_login_resets_the_count(staff: User, settings: Settings) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert admin_login(client, "wrong") == 200
    assert admin_login(client, "right-password") == 302  # logged in
    client.logout()
    assert admin_login(client, "wrong") == 200  # counting starts again


def test_a_wrong_basic_login_is_a_401_with_www_authenticate(staff: User) -> None:
    response = APIClient().post(EVALUATIONS, BODY, format="json", HTTP_AUTHORIZATION=basic("admin", "wrong"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="api"'
    assert "invalid username/password" in response.json()["error"].lower()


def test_wrong_basic_logins_lock_the_client_out_with_a_429(staff: User, settings: Settings) -> None:
    client = APIClient()
    statuses = [
        client.get(EVALUATIONS, HTTP_AUTHORIZATION=basic("admin", f"guess{i}")).status_code
        for i in range(settings.AXES_FAILURE_LIMIT + 3)
    ]
    assert statuses[: settings.AXES_FAILURE_LIMIT - 1] == [401] * (settings.AXES_FAILURE_LIMIT - 1)
    assert set(statuses[settings.AXES_FAILURE_LIMIT - 1 :]) == {429}
    locked = client.get(EVALUATIONS, HTTP_AUTHORIZATION=basic("admin", "right-password"))
    assert locked.status_code == 429
    assert "too many failed logins" in locked.json()["error"]
    assert int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    # Another address is not affected.
    other = APIClient(REMOTE_ADDR="10.0.0.2")
    assert other.get(EVALUATIONS, HTTP_AUTHORIZATION=basic("admin", "right-password")).status_code == 200
